"""Speed of the training simulator: one iteration of a 1-trillion-parameter GPT (Narayanan et al.
2021, Table 1: 128 layers, hidden 25600, 160 heads) on A100s, and how the time grows with the
number of GPUs (pipeline stages, data-parallel replicas) and of micro-batches. Times are CPU
seconds of the simulating process (one core; immune to other load on the machine).

Run: python benchmarks/bench_training.py [--quick]
Only one data-parallel replica's pipeline is simulated (all replicas are identical), so the cost
grows with pp × micro-batches, not with the number of GPUs.
"""

from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from simcluster.cost import cost_model_for
from simcluster.llm.spec import LlmSpec
from simcluster.training.plan import TrainingPlan
from simcluster.training.simulate import simulate_training

GPT_1T = LlmSpec(name="gpt-1t", n_layers=128, hidden_size=25600, n_heads=160, n_kv_heads=160, head_dim=160,
                 intermediate_size=4 * 25600, vocab_size=51200, max_position=2048, ffn_activation="gelu",
                 norm="layernorm")


def time_one(plan: TrainingPlan, cm, link_model: str, repeats: int = 3) -> tuple[float, object]:
    """Best-of-`repeats` CPU seconds (process time: what the call costs one core, unaffected by
    other processes sharing the machine) of one simulate_training call, and its result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.process_time()
        result = simulate_training(GPT_1T, plan, cm, link_model=link_model)
        best = min(best, time.process_time() - t0)
    return best, result


def plan_1t(pp: int = 64, dp: int = 6, global_batch: int = 3072) -> TrainingPlan:
    return TrainingPlan(gpu="a100-sxm-80gb", n_gpus=8 * pp * dp, tp=8, pp=pp, dp=dp, micro_batch=1,
                        global_batch=global_batch, seq_len=2048, sequence_parallel=True, zero=1,
                        bucket_bytes=40e6 * 4)   # Megatron-LM DDP bucket: 40M fp32 main-grad params


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer rows, one repeat")
    args = ap.parse_args(argv)
    reps = 1 if args.quick else 3
    cm = cost_model_for("a100-sxm-80gb", "roofline")
    console = Console(width=140)

    t = Table(title="1T GPT, TP8 x PP64 x DP6 = 3,072 A100, global batch 3072 (512 micro-batches per pipeline)")
    for c in ("link model", "CPU s", "sim iteration s", "MFU", "bubble", "passes simulated"):
        t.add_column(c, justify="right")
    for lm in ("fluid", "fifo"):
        wall, r = time_one(plan_1t(), cm, lm, reps)
        t.add_row(lm, f"{wall:.2f}", f"{r.time_s:.1f}", f"{r.mfu:.1%}", f"{r.bubble_s / r.time_s:.1%}",
                  f"{2 * 64 * 512:,}")
    console.print(t)

    t = Table(title="CPU time vs GPUs (pp grows, dp = 6, 8 micro-batches per stage)")
    for c in ("GPUs", "pp", "micro-batches", "CPU s (fluid)", "CPU s (fifo)"):
        t.add_column(c, justify="right")
    for pp in ((8, 32) if args.quick else (8, 16, 32, 64)):
        plan = plan_1t(pp, 6, 6 * 8 * pp)
        wf, _ = time_one(plan, cm, "fluid", reps)
        wi, _ = time_one(plan, cm, "fifo", reps)
        t.add_row(f"{plan.n_gpus:,}", str(pp), str(plan.n_micro_batches), f"{wf:.3f}", f"{wi:.3f}")
    console.print(t)

    t = Table(title="CPU time vs GPUs (dp grows; TP8 x PP64, 512 micro-batches per pipeline)")
    for c in ("GPUs", "dp", "CPU s (fifo)", "sim iteration s"):
        t.add_column(c, justify="right")
    for dp in ((6, 96) if args.quick else (6, 24, 96)):
        plan = plan_1t(64, dp, dp * 512)
        wi, r = time_one(plan, cm, "fifo", reps)
        t.add_row(f"{plan.n_gpus:,}", str(dp), f"{wi:.3f}", f"{r.time_s:.1f}")
    console.print(t)

    t = Table(title="CPU time vs micro-batches (TP8 x PP64 x DP6)")
    for c in ("micro-batches", "CPU s (fluid)", "CPU s (fifo)", "bubble"):
        t.add_column(c, justify="right")
    for m in ((64, 512) if args.quick else (64, 128, 256, 512, 1024)):
        plan = plan_1t(64, 6, 6 * m)
        wf, r = time_one(plan, cm, "fluid", reps)
        wi, _ = time_one(plan, cm, "fifo", reps)
        t.add_row(str(m), f"{wf:.3f}", f"{wi:.3f}", f"{r.bubble_s / r.time_s:.1%}")
    console.print(t)


if __name__ == "__main__":
    main()
