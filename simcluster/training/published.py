"""Published large-scale training runs, as plans simcluster can simulate, with their reported MFU.

Sources:
- Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
  Table 3 (configurations: sequence 2048, vocabulary 51200, TP 8, data-parallel size 1, micro-batch
  1, sequence parallelism + selective recomputation) and the Megatron-LM README's MFU table for the
  same runs on A100 80GB (DGX SuperPOD, 8×200 Gb/s HDR per node): 22B 41.5%, 175B 51.4%,
  530B 56.0%, 1T 56.3%.
- Llama Team 2024, "The Llama 3 Herd of Models", Table 4: Llama 3 405B on H100 80GB, BF16 MFU
  43% (8,192 GPUs), 41% (16,384 GPUs), 38% (16,384 GPUs, 128k context with CP 16).
Assumptions where the papers are silent are stated per run (`note`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from simcluster.cost import cost_model_for
from simcluster.hardware.node import default_node_for
from simcluster.llm.spec import LlmSpec, load_llm
from simcluster.training.plan import TrainingPlan
from simcluster.training.result import model_flops_per_token
from simcluster.training.simulate import simulate_training


def gpt(name: str, layers: int, hidden: int, heads: int) -> LlmSpec:
    """A GPT-3-style model of Korthikanti et al. 2022 (4h GeLU MLP, LayerNorm, vocabulary 51200)."""
    return LlmSpec(name=name, n_layers=layers, hidden_size=hidden, n_heads=heads, n_kv_heads=heads,
                   head_dim=hidden // heads, intermediate_size=4 * hidden, vocab_size=51200, max_position=2048,
                   ffn_activation="gelu", norm="layernorm")


@dataclass(frozen=True)
class PublishedRun:
    name: str
    llm: LlmSpec
    plan: TrainingPlan
    reported_mfu: float
    source: str
    note: str = ""
    flops_llm: LlmSpec | None = None     # the model whose FLOPs define MFU, when `llm` is a pipeline-balanced stand-in


def _megatron(name, layers, hidden, heads, pp, gpus, batch, mfu, mb=1) -> PublishedRun:
    plan = TrainingPlan(gpu="a100-sxm-80gb", n_gpus=gpus, tp=8, pp=pp, dp=gpus // (8 * pp), micro_batch=mb,
                        global_batch=batch, seq_len=2048, sequence_parallel=True, recompute="selective", zero=1)
    return PublishedRun(name, gpt(name, layers, hidden, heads), plan, mfu,
                        "Korthikanti et al. 2022 Table 3; Megatron-LM README MFU table",
                        "1F1B schedule assumed; DP = 1 as in the paper's benchmark runs")


def _llama3(gpus, cp, dp, seq, batch_per_dp, mfu) -> PublishedRun:
    real = load_llm("llama-3.1-405b")
    # 126 layers over 16 stages: Llama 3 drops one layer from the first and last stage to balance
    # the embedding and the head; 128 equal layer slots stand in for that pipeline.
    balanced = replace(real, name="llama-3.1-405b-balanced", n_layers=128)
    plan = TrainingPlan(gpu="h100-sxm", n_gpus=gpus, tp=8, cp=cp, pp=16, dp=dp, micro_batch=1,
                        global_batch=batch_per_dp * dp, seq_len=seq, sequence_parallel=True, zero=2,
                        schedule="interleaved", virtual_stages=4)
    return PublishedRun(f"llama3-405b-{gpus}gpu-{seq // 1024}k", balanced, plan, mfu,
                        "Llama Team 2024, The Llama 3 Herd of Models, Table 4",
                        "interleaved 1F1B with 4 virtual stages, ZeRO-2, micro-batch 1 assumed; no activation "
                        "recomputation (the paper trains 8K sequences without it; at 128K recomputation is assumed)",
                        real)


def published_runs() -> list[PublishedRun]:
    return [
        _megatron("gpt-22b", 48, 6144, 64, 1, 8, 4, 0.415, mb=4),
        _megatron("gpt-175b", 96, 12288, 96, 8, 64, 64, 0.514),
        _megatron("gpt-530b", 105, 20480, 128, 35, 280, 280, 0.560),
        _megatron("gpt-1t", 128, 25600, 160, 64, 512, 512, 0.563),
        _llama3(8192, 1, 64, 8192, 32, 0.43),
        _llama3(16384, 1, 128, 8192, 16, 0.41),
        _llama3(16384, 16, 8, 131072, 16, 0.38),
    ]


def simulate_published(run: PublishedRun, cost_model: str = "calibrated", cm=None) -> dict:
    """Simulate a published run; a flat row with predicted and reported MFU and whether simcluster's
    memory model thinks the plan fits (reported, not forced: published runs did fit).
    cm: a prebuilt CostModel of run.plan.gpu (building one reads and fits the calibration tables)."""
    cm = cm or cost_model_for(run.plan.gpu, cost_model)
    node = default_node_for(run.plan.gpu)
    plan = run.plan
    if plan.seq_len > 65536:
        plan = replace(plan, recompute="full")
    r = simulate_training(run.llm, plan, cm, node, link_model="fifo")
    mfu = r.mfu
    if run.flops_llm is not None:
        mfu *= model_flops_per_token(run.flops_llm, plan.seq_len) / model_flops_per_token(run.llm, plan.seq_len)
    return {"run": run.name, "gpus": plan.n_gpus, "gpu": plan.gpu,
            "plan": f"TP{plan.tp} CP{plan.cp} PP{plan.pp} DP{plan.dp}, {plan.n_micro_batches} micro-batches, "
                    f"recompute {plan.recompute}",
            "reported_mfu": run.reported_mfu, "predicted_mfu": mfu, "error_points": mfu - run.reported_mfu,
            "time_s": r.time_s, "peak_memory_bytes": r.peak_memory_bytes, "fits": r.fits,
            "bubble_fraction": r.bubble_s / r.time_s, "exposed_comm_fraction": r.exposed_comm_s / r.time_s,
            "source": run.source}
