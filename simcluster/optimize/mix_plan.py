"""GPU mix planning end to end: simulated capacities per (GPU type, plan, bucket), the integer
program (gpu_mix.solve_gpu_mix), then the chosen mix simulated on the whole workload (re-solved
with derated capacities while it misses the SLO).

Requests are bucketed by prompt length. For each bucket the serving screen (serving_search.screen)
keeps the plans that fit and can meet the SLO; the cheapest `options_per_gpu` per GPU type by the
analytic bound become options, and each option's per-instance capacity on the bucket's requests
is found by bisection (serving_capacity.replica_capacity) through the sweep runner. The program
picks instance counts; verification replays the whole trace on all chosen replica groups at once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from simcluster.cost import cost_model_for
from simcluster.llm.spec import LlmSpec
from simcluster.optimize.gpu_mix import solve_gpu_mix
from simcluster.optimize.serving_capacity import (
    ServingInputs,
    candidate_label,
    horizon_s,
    replica_capacity,
    replica_groups,
    slo_holds,
)
from simcluster.optimize.serving_search import PLAN_KEYS, ServingSpace, screen, serving_fingerprint
from simcluster.optimize.sweep import SweepOptions
from simcluster.serving.simulate import simulate_serving
from simcluster.workload import Trace

DERATES = (1.0, 0.85, 0.7)    # capacity factors tried in turn until the verified mix meets the SLO


@dataclass
class MixPlan:
    capacity_table: list[dict]        # option, gpu, gpus_per_instance, usd_per_hour, role, bucket, capacity_rps
    demand_rps: dict[str, float]
    mix: object                       # gpu_mix.MixResult
    verification: dict = field(default_factory=dict)
    pruned: list[dict] = field(default_factory=list)
    simulations: int = 0
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def bucket_names(edges: list[int]) -> list[str]:
    """'<e0', 'e0-e1', ..., '>=en' for prompt-length edges in tokens."""
    e = sorted(edges)
    return [f"<{e[0]}"] + [f"{a}-{b}" for a, b in zip(e, e[1:])] + [f">={e[-1]}"] if e else ["all"]


def split_by_prompt(trace: Trace, edges: list[int]) -> dict[str, Trace]:
    """Sub-traces per prompt-length bucket, keeping arrival times (so each keeps its share of the
    rate). Empty buckets are left out."""
    e = sorted(edges)
    index = np.searchsorted(np.asarray(e), np.asarray(trace.prompt_tokens), side="right")
    out = {}
    for b, name in enumerate(bucket_names(e)):
        mask = index == b
        if mask.sum() >= 2:
            out[name] = Trace(f"{trace.name}[{name}]", np.asarray(trace.arrival_s)[mask],
                              np.asarray(trace.prompt_tokens)[mask], np.asarray(trace.output_tokens)[mask],
                              source=trace.source)
    return out


def plan_gpu_mix(llm: LlmSpec, trace: Trace, slo: dict, space: ServingSpace, bucket_edges: list[int],
                 gpus_available: dict[str, int] | None = None, budget_usd_per_hour: float | None = None,
                 cost_method: str = "calibrated", options_per_gpu: int = 1, capacity_requests: int = 200,
                 time_limit_s: float = 30.0, router: str = "least_outstanding",
                 sweep: SweepOptions = SweepOptions()) -> MixPlan:
    """Capacities, the GPU mix program and its verification; see the module doc."""
    started = time.perf_counter()
    buckets = split_by_prompt(trace, bucket_edges)
    demand = {name: float(len(t)) / max(trace.duration_s, 1e-9) for name, t in buckets.items()}
    models: dict = {}
    table, pruned, simulations = [], [], 0
    for name, sub in buckets.items():
        survivors, dropped = screen(llm, sub, slo, space, demand[name], cost_method, models)
        pruned += [{**d, "bucket": name} for d in dropped]
        chosen = []
        for gpu in space.gpus:
            mine = sorted((s for s in survivors if s["gpu"] == gpu),
                          key=lambda s: (-s["rate_hi_rps"] / s["usd_per_hour_per_replica"], candidate_label(s)))
            chosen += mine[:options_per_gpu]
        if not chosen:
            continue
        inputs = ServingInputs(llm, sub, slo, cost_method, router, capacity_requests, costs=models)
        fingerprint = serving_fingerprint(inputs)
        out = sweep.run(replica_capacity, [{k: s[k] for k in (*PLAN_KEYS, "rate_hi_rps")} for s in chosen],
                        inputs, fingerprint, f"capacity of bucket {name}")
        for s, cap, fresh in zip(chosen, out.results, out.fresh):
            simulations += cap["simulations"] if fresh else 0
            if cap["capacity_rps"] <= 0:
                pruned.append({"plan": candidate_label(s), "stage": "simulation", "bucket": name,
                               "reason": f"misses the SLO on bucket {name} at every rate tried"})
                continue
            table.append({"option": candidate_label(s), "gpu": s["gpu"], "gpus_per_instance": s["tp"] * s["pp"],
                          "usd_per_hour": s["usd_per_hour_per_replica"], "role": "aggregated", "bucket": name,
                          "capacity_rps": cap["capacity_rps"]})
    plan = MixPlan(table, demand, None, pruned=pruned, simulations=simulations)
    plan.notes.append("options are aggregated replicas; disaggregated prefill/decode pools are not offered yet")
    if not table:
        plan.notes.append("no option meets the SLO on any bucket")
        plan.wall_s = time.perf_counter() - started
        return plan
    # Capacities were measured one bucket and one instance at a time; mixed buckets on shared
    # instances queue more, so a mix that misses the SLO is re-solved with capacities derated.
    for derate in DERATES:
        rows = [{**r, "capacity_rps": r["capacity_rps"] * derate} for r in table]
        plan.mix = solve_gpu_mix(rows, demand, gpus_available, budget_usd_per_hour, time_limit_s)
        if not (plan.mix.counts and any(plan.mix.counts.values())):
            break
        plan.verification = verify_mix(llm, trace, slo, table, plan.mix.counts, space, models, router)
        plan.verification["capacity_derate"] = derate
        plan.simulations += 1
        if plan.verification["meets_slo"]:
            break
        plan.notes.append(f"the mix solved with capacities × {derate:g} misses the SLO on the whole workload "
                          f"({plan.verification['slo_attainment']:.1%} within it)")
    plan.wall_s = time.perf_counter() - started
    return plan


def verify_mix(llm, trace, slo, table, counts: dict[str, int], space: ServingSpace, models: dict,
               router: str) -> dict:
    """Simulate every chosen option's replicas together on the whole trace.

    The router spreads requests by load, not by bucket as the program assumed, so this checks
    that the mix holds without bucket-aware routing (it holds with it at least as well only if
    the program's time-sharing model is right)."""
    by_option = {}
    for c in space.candidates():
        by_option.setdefault(candidate_label(c), c)
    groups = []
    for option, n in sorted(counts.items()):
        if n > 0:
            c = by_option[option]
            groups += replica_groups(c, n, models.get(c["gpu"]) or cost_model_for(c["gpu"]))
    res = simulate_serving(llm, trace, groups, router, until_s=horizon_s(trace, slo))
    meets, summary = slo_holds(res, slo)
    q = f"p{float(slo.get('percentile', 90)):g}"
    return {"meets_slo": bool(meets), "gpus": res.gpu_count, "usd_per_hour": res.price_usd_per_hour,
            f"ttft_s_{q}": summary.get(f"ttft_s_{q}", math.nan), f"tpot_s_{q}": summary.get(f"tpot_s_{q}", math.nan),
            "slo_attainment": summary["slo_attainment"], "request_throughput_per_s": summary["request_throughput_per_s"],
            "unfinished": res.unfinished}
