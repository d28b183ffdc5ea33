"""Training plan search: TP × PP × DP × CP × EP × micro-batch × virtual stages × recompute × ZeRO.

For one LLM, one GPU type and count and one global batch:
1. enumerate every combination whose degrees multiply to the GPU count; drop those the training
   simulator's validate_plan refuses (shape) and those the training memory model says do not fit
   (memory), each with its reason;
2. estimate the step time of every survivor analytically (estimate_step below: per-chunk costs
   from the training cost model, a closed-form pipeline bubble, exposed gradient sync and the
   optimizer step) and rank by it — MFU follows, the model FLOPs being fixed;
3. simulate the best `simulate_top` in full with the event simulator (through the sweep runner,
   so they run in parallel, on Ray, and are cached) and rank those by simulated step time.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, replace

from simcluster.cost import cost_model_for
from simcluster.cost.model import CostModel
from simcluster.hardware.gpu import load_gpu
from simcluster.hardware.node import default_node_for
from simcluster.llm.spec import LlmSpec
from simcluster.optimize.cache import code_fingerprint, object_fingerprint, stable_hash
from simcluster.optimize.sweep import SweepOptions
from simcluster.training.memory import training_memory
from simcluster.training.ops import optimizer_op
from simcluster.training.placement import collective_s, p2p_s, plan_groups
from simcluster.training.plan import PlanError, TrainingPlan, validate_plan
from simcluster.training.result import model_flops_per_token
from simcluster.training.simulate import plan_chunks, simulate_training
from simcluster.units import dtype_bytes

GIB = 2**30
PLAN_FIELDS = ("tp", "pp", "dp", "cp", "ep", "micro_batch", "virtual_stages", "schedule", "recompute", "zero",
               "sequence_parallel")


@dataclass(frozen=True)
class TrainingSpace:
    """Values to try per axis. pp None: every divisor of n_gpus that divides the layer count."""

    gpu: str
    n_gpus: int
    seq_len: int
    global_batch: int
    tp: tuple[int, ...] = (1, 2, 4, 8)
    pp: tuple[int, ...] | None = None
    cp: tuple[int, ...] = (1, 2)
    ep: tuple[int, ...] = (1,)
    micro_batch: tuple[int, ...] = (1, 2, 4)
    virtual_stages: tuple[int, ...] = (1, 2)
    recompute: tuple[str, ...] = ("none", "selective", "full")
    zero: tuple[int, ...] = (0, 1, 2, 3)
    schedule: str = "1f1b"            # for virtual_stages = 1; more than one chunk runs 'interleaved'
    sequence_parallel: bool = True    # with tp > 1


@dataclass
class TrainingSearchResult:
    rows: list[dict]                  # memory-feasible plans, best first (simulated ones on top)
    pruned: list[dict]                # plan, stage, reason
    candidates: int = 0
    simulated: int = 0
    cached: int = 0
    wall_s: float = 0.0
    estimate_wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> dict | None:
        return self.rows[0] if self.rows else None


def plan_label(p: TrainingPlan) -> str:
    parts = [f"TP{p.tp}", f"PP{p.pp}", f"DP{p.dp}"]
    if p.cp > 1:
        parts.append(f"CP{p.cp}")
    if p.ep > 1:
        parts.append(f"EP{p.ep}")
    parts.append(f"mb{p.micro_batch}")
    if p.virtual_stages > 1:
        parts.append(f"v{p.virtual_stages}")
    elif p.pp > 1:
        parts.append(p.schedule)
    parts.append(f"rc-{p.recompute}")
    parts.append(f"zero{p.zero}")
    return " ".join(parts)


def candidate_plans(llm: LlmSpec, space: TrainingSpace) -> list[TrainingPlan]:
    """Every combination whose degrees multiply to n_gpus (others are not plans at all)."""
    n = space.n_gpus
    pps = space.pp or tuple(d for d in range(1, min(n, llm.n_layers) + 1) if n % d == 0 and llm.n_layers % d == 0)
    plans = []
    for tp, pp, cp in itertools.product(space.tp, pps, space.cp):
        if n % (tp * pp * cp):
            continue
        dp = n // (tp * pp * cp)
        for ep, mb, v, rc, zero in itertools.product(space.ep, space.micro_batch, space.virtual_stages,
                                                     space.recompute, space.zero):
            if v > 1 and pp == 1:
                continue   # virtual stages interleave a pipeline; without one they are the same plan
            schedule = "interleaved" if v > 1 else space.schedule
            plans.append(TrainingPlan(gpu=space.gpu, n_gpus=n, seq_len=space.seq_len, micro_batch=mb,
                                      global_batch=space.global_batch, dp=dp, tp=tp, pp=pp, cp=cp, ep=ep,
                                      zero=zero, sequence_parallel=space.sequence_parallel and tp > 1,
                                      schedule=schedule, virtual_stages=v, recompute=rc))
    return plans


def _chunk_key(p: TrainingPlan) -> tuple:
    """Plan fields a chunk's cost depends on (ZeRO and DP only through FSDP's gathers)."""
    return (p.tp, p.pp, p.virtual_stages, p.cp, p.ep, p.micro_batch, p.recompute, p.sequence_parallel,
            p.zero == 3, p.dp if p.zero == 3 else 0, p.dp * p.cp // max(p.ep, 1) if p.ep > 1 else 0)


def pipeline_s(schedule: str, m: int, p: int, v: int, f_s: float, b_s: float, w_s: float) -> float:
    """Pipeline time of m micro-batches on p devices whose passes take f_s, b_s (input gradient)
    and w_s (weight gradient) per micro-batch, all chunks of a device together.

    1F1B and GPipe idle (p-1) micro-batch slots; interleaving v chunks divides that by v
    (Narayanan et al. 2021 §2.2); ZB-H1 fills the bubble with W passes, leaving
    (p-1)(F + B - W) (Qi et al. 2023 §3.1).
    """
    t = f_s + b_s + w_s
    if schedule == "zero_bubble":
        return m * t + (p - 1) * max(0.0, f_s + b_s - w_s)
    return (m + (p - 1) / max(v, 1)) * t


def estimate_step(llm: LlmSpec, plan: TrainingPlan, cm: CostModel, gpus_per_node: int,
                  chunk_cache: dict | None = None) -> dict:
    """Analytic step time of `plan`: {step_s, pipeline_s, exposed_comm_s, optimizer_s, mfu}.

    Chunk costs come from the training cost model (training.simulate.plan_chunks); on top:
    pipeline_s above, two exposed activation sends per stage boundary (warm-up and drain), the
    part of the gradient reduction that the last micro-batch's backward does not hide, the Adam
    step over this GPU's shard and, for ZeRO-1/2, the weight all-gather after it.
    """
    groups = plan_groups(plan, gpus_per_node)
    key = _chunk_key(plan)
    cache = {} if chunk_cache is None else chunk_cache
    if key not in cache:
        cache[key] = plan_chunks(llm, replace(plan, zero=3 if plan.zero == 3 else 0), cm, groups)
    chunks = cache[key]
    p, v, m = plan.pp, plan.virtual_stages, plan.n_micro_batches
    worst, worst_dev = None, 0
    for dev in range(p):
        mine = [c for c in chunks if c.index % p == dev]
        f = sum(c.forward_total_s for c in mine)
        b = sum(c.backward_input_s + c.backward_comm_s for c in mine)
        w = sum(c.backward_weight_s for c in mine)
        if worst is None or f + b + w > sum(worst):
            worst, worst_dev = (f, b, w), dev
    f, b, w = worst
    pipe = pipeline_s(plan.schedule, m, p, v, f, b, w)
    sends = 2 * (p - 1) * p2p_s(chunks[0].send_bytes, groups.pp_crosses_node(0), cm.links) if p > 1 else 0.0
    mine = [c for c in chunks if c.index % p == worst_dev]
    dense = sum(c.dense_params for c in mine)
    expert = sum(c.expert_params for c in mine)
    grad_sync = 0.0
    if plan.zero < 3:
        coll = "all_reduce" if plan.zero == 0 else "reduce_scatter"
        gb = dtype_bytes(plan.grad_dtype)
        grad_sync = (collective_s(coll, dense * gb, groups.dp, cm) if groups.dp.size > 1 else 0.0) \
            + (collective_s(coll, expert * gb, groups.expert_dp, cm) if groups.expert_dp.size > 1 and expert else 0.0)
    exposed_sync = max(0.0, grad_sync - (b + w))
    local = dense / (groups.dp.size if plan.zero >= 1 else 1) + expert / (groups.expert_dp.size if plan.zero >= 1 else 1)
    opt = cm.op(optimizer_op(plan, local), cuda_graphs=False).time_s if local > 0 else 0.0
    gather = 0.0
    if plan.zero in (1, 2):
        pb = dtype_bytes(plan.param_dtype)
        gather = (collective_s("all_gather", dense * pb, groups.dp, cm) if groups.dp.size > 1 else 0.0) \
            + (collective_s("all_gather", expert * pb, groups.expert_dp, cm) if groups.expert_dp.size > 1 and expert else 0.0)
    step = pipe + sends + exposed_sync + opt + gather
    flops = model_flops_per_token(llm, plan.seq_len) * plan.tokens_per_iteration
    mfu = flops / (step * cm.gpu.flops_per_s("bf16") * plan.n_gpus)
    return {"step_s": step, "pipeline_s": pipe, "exposed_comm_s": sends + exposed_sync + gather,
            "optimizer_s": opt, "mfu": mfu, "tokens_per_s": plan.tokens_per_iteration / step}


@dataclass(frozen=True)
class TrainingInputs:
    """What every full simulation of one training search shares (shipped once per task)."""

    llm: LlmSpec
    cm: CostModel
    gpus_per_node: int


def simulate_plan(candidate: dict, inputs: TrainingInputs) -> dict:
    """Sweep function: simulate the plan described by `candidate` (TrainingPlan fields)."""
    plan = TrainingPlan(**candidate)
    r = simulate_training(inputs.llm, plan, inputs.cm, default_node_for(plan.gpu))
    return {"sim_step_s": r.time_s, "sim_mfu": r.mfu, "sim_tokens_per_s": r.tokens_per_s,
            "sim_compute_s": r.compute_s, "sim_exposed_comm_s": r.exposed_comm_s, "sim_bubble_s": r.bubble_s,
            "sim_optimizer_s": r.optimizer_s}


def _plan_dict(p: TrainingPlan) -> dict:
    return {"gpu": p.gpu, "n_gpus": p.n_gpus, "seq_len": p.seq_len, "global_batch": p.global_batch,
            **{k: getattr(p, k) for k in PLAN_FIELDS}}


def search_training_plans(llm: LlmSpec, space: TrainingSpace, cost_method: str = "calibrated",
                          simulate_top: int = 5, sweep: SweepOptions = SweepOptions(),
                          cm: CostModel | None = None) -> TrainingSearchResult:
    """Rank every memory-feasible plan of `space` by estimated step time; simulate the best
    `simulate_top` in full and put them first, ordered by simulated step time."""
    started = time.perf_counter()
    cm = cm or cost_model_for(space.gpu, cost_method)
    gpu = load_gpu(space.gpu)
    gpn = default_node_for(space.gpu).gpus_per_node
    plans = candidate_plans(llm, space)
    result = TrainingSearchResult([], [], candidates=len(plans))
    cache: dict = {}
    for plan in plans:
        label = plan_label(plan)
        try:
            validate_plan(plan, llm, gpn)
        except PlanError as err:
            result.pruned.append({"plan": label, "stage": "shape", "reason": str(err).removeprefix("training plan: ")})
            continue
        mem = training_memory(llm, plan, gpu.memory_bytes)
        if not mem.fits:
            result.pruned.append({"plan": label, "stage": "memory",
                                  "reason": f"peak {mem.peak_memory_bytes / GIB:.1f} GiB on stage {mem.stage} "
                                            f"> {gpu.memory_bytes / GIB:.0f} GiB"})
            continue
        est = estimate_step(llm, plan, cm, gpn, cache)
        result.rows.append({"plan": label, **_plan_dict(plan), "peak_memory_gib": mem.peak_memory_bytes / GIB,
                            "est_step_s": est["step_s"], "est_mfu": est["mfu"],
                            "est_tokens_per_s": est["tokens_per_s"], "est_exposed_comm_s": est["exposed_comm_s"]})
    result.estimate_wall_s = time.perf_counter() - started
    result.rows.sort(key=lambda r: (r["est_step_s"], r["plan"]))
    top = result.rows[:simulate_top]
    if top:
        inputs = TrainingInputs(llm, cm, gpn)
        import simcluster.training.simulate as simulator
        fingerprint = stable_hash(llm, cost_method, space.gpu, object_fingerprint(cm), code_fingerprint(simulator))
        out = sweep.run(simulate_plan, [_plan_dict_from_row(r) for r in top], inputs, fingerprint,
                        "simulating training plans")
        result.cached, result.simulated = out.cached, len(top)
        for row, sim in zip(top, out.results):
            row.update(sim)
            row["estimate_error"] = row["est_step_s"] / row["sim_step_s"] - 1.0
        top.sort(key=lambda r: (r["sim_step_s"], r["plan"]))
        result.rows[:len(top)] = top
    for i, r in enumerate(result.rows, 1):
        r["rank"] = i
    if not result.rows:
        result.notes.append("no plan fits in memory; try more GPUs, ZeRO-3, full recompute or a smaller micro-batch")
    result.wall_s = time.perf_counter() - started
    return result


def _plan_dict_from_row(r: dict) -> dict:
    return {k: r[k] for k in ("gpu", "n_gpus", "seq_len", "global_batch", *PLAN_FIELDS)}
