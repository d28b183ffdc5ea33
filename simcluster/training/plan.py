"""TrainingPlan: how one training iteration is parallelised, batched, recomputed and stored.

Rank placement (Megatron-LM's default order, tp innermost): global rank =
tp_rank + tp·(cp_rank + cp·(dp_rank + dp·pp_rank)). Tensor parallel groups are consecutive GPUs
(inside a node when tp <= GPUs per node), then context parallel, then data parallel; pipeline
stages are outermost. Expert parallel groups are carved out of the dp×cp ranks of one stage
(ep divides dp·cp) so the EP all-to-all runs among GPUs holding the same non-expert shard.
"""

from __future__ import annotations

from dataclasses import dataclass

from simcluster.llm.spec import LlmSpec

SCHEDULES = ("gpipe", "1f1b", "interleaved", "zero_bubble")
RECOMPUTE = ("none", "selective", "full")
COMPUTE_DTYPES = ("bf16", "fp8")
STATE_DTYPES = ("fp32", "bf16")


class PlanError(ValueError):
    """A training plan that cannot run: the message names the field and what was expected."""


@dataclass(frozen=True)
class TrainingPlan:
    """One training deployment of one LLM.

    gradient accumulation steps = global_batch / (micro_batch × dp): each pipeline replica runs
    that many micro-batches per iteration. param_dtype / grad_dtype say how weights and gradients
    are stored: Megatron-LM bf16 training keeps bf16 weights and fp32 main gradients beside an
    fp32 master copy (18 bytes/param with Adam); torch AMP keeps fp32 weights and gradients
    (param_dtype='fp32', grad_dtype='fp32', master_weights=False: 16 bytes/param).

    >>> p = TrainingPlan(gpu="h100-sxm", n_gpus=8, dp=8, micro_batch=2, global_batch=64, seq_len=4096)
    >>> p.grad_accum
    4
    """

    gpu: str
    n_gpus: int
    seq_len: int
    micro_batch: int = 1
    global_batch: int | None = None     # sequences per iteration; None = micro_batch × dp
    dp: int = 1
    tp: int = 1
    pp: int = 1
    cp: int = 1
    ep: int = 1
    zero: int = 0                       # 0 DDP, 1 optimizer states, 2 + gradients, 3 + weights (FSDP)
    sequence_parallel: bool = False
    schedule: str = "1f1b"
    virtual_stages: int = 1
    recompute: str = "none"
    dtype: str = "bf16"                 # GEMM compute format
    optimizer_state_dtype: str = "fp32"
    master_weights: bool = True
    param_dtype: str = "bf16"
    grad_dtype: str = "fp32"
    capacity_factor: float | None = None  # MoE: expert capacity × mean load; None = dropless
    moe_imbalance: float = 1.0          # MoE: tokens on the busiest expert rank / the mean
    flash_attention: bool = True        # fused attention stores no s×s scores (Dao et al. 2022)
    nodes: int | None = None            # None = n_gpus / GPUs per node
    bucket_bytes: float = 25e6          # DDP gradient bucket (torch DDP default 25 MB)
    vocab_parallel: bool = True         # embedding and LM head split over tp (Megatron); False: replicated

    @property
    def grad_accum(self) -> int:
        return self.global_batch_size // (self.micro_batch * self.dp)

    @property
    def global_batch_size(self) -> int:
        return self.global_batch if self.global_batch is not None else self.micro_batch * self.dp

    @property
    def n_micro_batches(self) -> int:
        """Micro-batches each pipeline replica runs per iteration."""
        return self.grad_accum

    @property
    def tokens_per_iteration(self) -> int:
        return self.global_batch_size * self.seq_len


def _fail(field: str, expected: str, got) -> None:
    raise PlanError(f"training plan: {field}: expected {expected}, got {got!r}")


def validate_plan(plan: TrainingPlan, llm: LlmSpec, gpus_per_node: int | None = None) -> TrainingPlan:
    """Check `plan` against itself and `llm`; PlanError (one line) on the first problem.

    Rules: dp·tp·pp·cp = n_gpus; ep divides dp·cp (experts shard over the data/context ranks of
    one stage); heads and KV heads divisible by tp (or tp by KV heads: replicated KV);
    layers divisible by pp·virtual_stages; global batch divisible by micro_batch·dp;
    interleaved needs micro-batches divisible by pp (Megatron's constraint); seq_len divisible by
    2·cp (load-balanced causal ring attention splits each sequence into 2·cp chunks).
    """
    for name in ("n_gpus", "seq_len", "micro_batch", "dp", "tp", "pp", "cp", "ep", "virtual_stages"):
        v = getattr(plan, name)
        if not isinstance(v, int) or v < 1:
            _fail(name, "a positive integer", v)
    if plan.dp * plan.tp * plan.pp * plan.cp != plan.n_gpus:
        _fail("n_gpus", f"dp×tp×pp×cp = {plan.dp * plan.tp * plan.pp * plan.cp}", plan.n_gpus)
    if plan.zero not in (0, 1, 2, 3):
        _fail("zero", "0, 1, 2 or 3", plan.zero)
    if plan.schedule not in SCHEDULES:
        _fail("schedule", f"one of {SCHEDULES}", plan.schedule)
    if plan.recompute not in RECOMPUTE:
        _fail("recompute", f"one of {RECOMPUTE}", plan.recompute)
    if plan.dtype not in COMPUTE_DTYPES:
        _fail("dtype", f"one of {COMPUTE_DTYPES}", plan.dtype)
    for name in ("optimizer_state_dtype", "param_dtype", "grad_dtype"):
        if getattr(plan, name) not in STATE_DTYPES:
            _fail(name, f"one of {STATE_DTYPES}", getattr(plan, name))
    if plan.virtual_stages > 1 and plan.schedule != "interleaved":
        _fail("virtual_stages", "1 unless schedule is 'interleaved'", plan.virtual_stages)
    if llm.n_heads % plan.tp:
        _fail("tp", f"a divisor of {llm.name}'s {llm.n_heads} attention heads", plan.tp)
    if llm.n_kv_heads % plan.tp and plan.tp % llm.n_kv_heads:
        _fail("tp", f"a divisor or multiple of {llm.name}'s {llm.n_kv_heads} KV heads", plan.tp)
    if llm.n_layers % (plan.pp * plan.virtual_stages):
        _fail("pp", f"pp×virtual_stages dividing {llm.name}'s {llm.n_layers} layers", plan.pp * plan.virtual_stages)
    if (plan.dp * plan.cp) % plan.ep:
        _fail("ep", f"a divisor of dp×cp = {plan.dp * plan.cp}", plan.ep)
    if plan.ep > 1 and (llm.moe is None or llm.moe.n_experts % plan.ep):
        _fail("ep", f"1 for a dense LLM or a divisor of the expert count of {llm.name}", plan.ep)
    gb = plan.global_batch_size
    if gb < 1 or gb % (plan.micro_batch * plan.dp):
        _fail("global_batch", f"a positive multiple of micro_batch×dp = {plan.micro_batch * plan.dp}", gb)
    if plan.schedule == "interleaved" and plan.n_micro_batches % plan.pp:
        _fail("global_batch", f"micro-batches per pipeline ({plan.n_micro_batches}) divisible by pp={plan.pp} "
              "for the interleaved schedule", gb)
    if plan.seq_len % (2 * plan.cp) and plan.cp > 1:
        _fail("seq_len", f"a multiple of 2×cp = {2 * plan.cp}", plan.seq_len)
    if plan.sequence_parallel and plan.tp == 1:
        _fail("sequence_parallel", "False when tp = 1", plan.sequence_parallel)
    if (plan.capacity_factor is not None and not plan.capacity_factor > 0) or not plan.moe_imbalance >= 1:
        _fail("moe_imbalance", "capacity_factor > 0 and moe_imbalance >= 1", (plan.capacity_factor, plan.moe_imbalance))
    if plan.nodes is not None and gpus_per_node is not None:
        if plan.nodes * gpus_per_node < plan.n_gpus:
            _fail("nodes", f"at least n_gpus / {gpus_per_node} GPUs per node = {-(-plan.n_gpus // gpus_per_node)}",
                  plan.nodes)
    return plan
