"""Serving plan search: GPU × TP × PP × EP × batching × chunking × scheduler order, replicas sized
by simulated capacity.

1. Screen every candidate analytically (serving_bounds.py): shape and topology, memory (the
   longest request must fit in the KV cache), the SLO with the replica empty, and an optimistic
   throughput bound that gives the fewest replicas the target rate could need.
2. Branch and bound: survivors go in order of their optimistic objective, a wave at a time through
   the sweep runner. Each gets its per-replica capacity (bisection over the request rate,
   serving_capacity.py), replicas = ceil(target rate / capacity), and that deployment is verified
   by simulating the whole workload. A candidate whose optimistic bound cannot beat the best
   verified plan is dropped as dominated, unless fewer than `simulate_at_least` were simulated.
3. Rank, mark the cost–latency Pareto front, and keep every dropped candidate with its reason.

Disaggregated candidates (prefill and decode pools, DistServe-style) are searched in units of
p prefill + d decode replicas per `pd_ratio` 'p:d'; their capacity is per unit.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field

import numpy as np

from simcluster.cost import cost_model_for
from simcluster.hardware.gpu import load_gpu
from simcluster.hardware.node import default_node_for
from simcluster.llm.memory import serving_memory
from simcluster.llm.spec import LlmSpec
from simcluster.optimize.cache import stable_hash
from simcluster.optimize.pareto import pareto_front
from simcluster.optimize.serving_bounds import (
    capacity_bound_rps,
    replicas_lower_bound,
    tpot_batch_limit,
    unloaded_latency_s,
)
from simcluster.optimize.serving_capacity import (
    ServingInputs,
    candidate_label,
    gpus_per_unit,
    pd_split,
    replica_capacity,
    verify_deployment,
)
from simcluster.optimize.sweep import SweepOptions
from simcluster.serving.simulate import ReplicaGroup
from simcluster.serving.step import StepTimer

OBJECTIVES = ("min_cost", "max_goodput_per_usd")


class SearchError(ValueError):
    """A search that cannot be run as asked (unknown objective, no SLO target); one line."""


@dataclass(frozen=True)
class ServingSpace:
    """The values to try along each axis; candidates are their Cartesian product."""

    gpus: tuple[str, ...]
    tp: tuple[int, ...] = (1, 2, 4, 8)
    pp: tuple[int, ...] = (1,)
    ep: tuple[int, ...] = (1,)
    max_num_seqs: tuple[int, ...] = (256,)
    max_batched_tokens: tuple[int, ...] = (8192,)
    chunked_prefill: tuple[bool, ...] = (True,)
    order: tuple[str, ...] = ("decode_first",)
    disaggregated: tuple[bool, ...] = (False,)
    max_replicas: int = 16            # replicas, or P/D units, at most
    pd_ratio: tuple[str, ...] = ("1:1", "1:2", "2:1")

    def candidates(self) -> list[dict]:
        axes = ("gpu", "tp", "pp", "ep", "max_num_seqs", "max_batched_tokens", "chunked_prefill", "order")
        values = (self.gpus, self.tp, self.pp, self.ep, self.max_num_seqs, self.max_batched_tokens,
                  self.chunked_prefill, self.order)
        out = []
        for combo in itertools.product(*values):
            base = dict(zip(axes, combo))
            for disaggregated in self.disaggregated:
                for ratio in (self.pd_ratio if disaggregated else (None,)):
                    out.append({**base, "disaggregated": disaggregated, "pd_ratio": ratio})
        return out


@dataclass
class SearchResult:
    """rows: verified plans, best first; pruned: {plan, stage, reason}; front: the Pareto rows."""

    rows: list[dict]
    pruned: list[dict]
    objective: str = "min_cost"
    target_rate_rps: float = 0.0
    candidates: int = 0
    simulations: int = 0
    cached: int = 0
    wall_s: float = 0.0
    front: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> dict | None:
        feasible = [r for r in self.rows if r["meets_slo"]]
        return feasible[0] if feasible else None


def _drop(pruned: list, c: dict, stage: str, reason: str) -> None:
    pruned.append({"plan": candidate_label(c), "stage": stage, "reason": reason})


def _shape_reason(llm: LlmSpec, c: dict, gpus_per_node: int) -> tuple[str, str] | None:
    tp, pp, ep = c["tp"], c["pp"], c["ep"]
    if tp > gpus_per_node:
        return "topology", f"TP{tp} exceeds the {gpus_per_node} GPUs of one node"
    if llm.n_heads % tp or (llm.n_kv_heads % tp and tp % llm.n_kv_heads):
        return "shape", f"{llm.n_heads} heads / {llm.n_kv_heads} KV heads do not split over TP{tp}"
    if pp > llm.n_layers:
        return "shape", f"PP{pp} exceeds {llm.n_layers} layers"
    if ep > 1 and llm.moe is None:
        return "shape", f"EP{ep} needs a mixture-of-experts LLM; {llm.name} is dense"
    if ep > 1 and (llm.moe.n_experts % ep or ep > tp * pp):
        return "shape", f"EP{ep} must divide {llm.moe.n_experts} experts and be at most TP×PP = {tp * pp}"
    if c["disaggregated"] and "role" not in {f.name for f in dataclasses.fields(ReplicaGroup)}:
        return "unsupported", "this serving simulator has no prefill/decode pools"
    return None


def screen(llm: LlmSpec, trace, slo: dict, space: ServingSpace, rate_rps: float,
           cost_method: str = "calibrated", models: dict | None = None) -> tuple[list[dict], list[dict]]:
    """Analytic stage: (survivors with their bound fields, dropped {plan, stage, reason}).
    models: GPU name -> CostModel, filled in for the GPUs that needed one."""
    pct = float(slo.get("percentile", 90))
    prompt_q = float(np.percentile(trace.prompt_tokens, pct))
    output_q = float(np.percentile(trace.output_tokens, pct))
    prompt_mean = float(np.mean(trace.prompt_tokens))
    output_mean = float(np.mean(trace.output_tokens))
    longest = int(np.max(np.asarray(trace.prompt_tokens) + np.asarray(trace.output_tokens)))
    models = {} if models is None else models
    survivors, pruned, timers = [], [], {}
    for c in space.candidates():
        gpu = load_gpu(c["gpu"])
        shape = _shape_reason(llm, c, default_node_for(c["gpu"]).gpus_per_node)
        if shape:
            _drop(pruned, c, *shape)
            continue
        mem = serving_memory(llm, gpu.memory_bytes, c["tp"], c["pp"], c["ep"],
                             max_batched_tokens=c["max_batched_tokens"])
        if not mem.fits or mem.kv_capacity_tokens < longest:
            _drop(pruned, c, "memory", f"weights {mem.weight_bytes / 2**30:.1f} GiB/GPU leave KV room for "
                                       f"{max(0, mem.kv_capacity_tokens)} tokens; the longest request needs {longest}")
            continue
        if c["gpu"] not in models:
            models[c["gpu"]] = cost_model_for(c["gpu"], cost_method)
        shape_key = (c["gpu"], c["tp"], c["pp"], c["ep"])
        if shape_key not in timers:
            timers[shape_key] = StepTimer(llm, models[c["gpu"]], c["tp"], c["pp"], c["ep"])
        timer = timers[shape_key]
        ttft0, tpot0 = unloaded_latency_s(timer, int(prompt_q), prompt_q + output_q / 2)
        if (slo.get("ttft_s") and ttft0 > slo["ttft_s"]) or (slo.get("tpot_s") and tpot0 > slo["tpot_s"]):
            _drop(pruned, c, "unloaded SLO", f"alone: TTFT {ttft0 * 1e3:.0f} ms, TPOT {tpot0 * 1e3:.1f} ms "
                                             f"for the p{pct:g} prompt of {prompt_q:.0f} tokens")
            continue
        ctx = prompt_mean + output_mean / 2
        kv_batch = int(mem.kv_capacity_tokens // max(ctx, 1.0))
        batch = tpot_batch_limit(timer, slo.get("tpot_s"), ctx, max(1, min(c["max_num_seqs"], kv_batch)))
        bound = capacity_bound_rps(timer, prompt_mean, output_mean, batch, c["max_batched_tokens"])
        if c["disaggregated"]:
            # A unit: p replicas prefill only (token bound over prompts), d replicas decode only.
            p, d = pd_split(c)
            bound = min(p * capacity_bound_rps(timer, prompt_mean, 0.0, batch, c["max_batched_tokens"]),
                        d * capacity_bound_rps(timer, 0.0, output_mean, batch, c["max_batched_tokens"]))
        lower = replicas_lower_bound(rate_rps, bound)
        if lower > space.max_replicas:
            _drop(pruned, c, "throughput bound", f"at most {bound:.2f} req/s per replica (decode batch {batch}); "
                                                 f">= {lower} replicas needed, limit {space.max_replicas}")
            continue
        per_replica = gpus_per_unit(c) * gpu.price_usd_per_hour
        survivors.append({**c, "rate_hi_rps": round(bound, 6), "replicas_lower": lower,
                          "usd_per_hour_per_replica": per_replica, "cost_lower_usd_per_hour": lower * per_replica,
                          "ttft_s_unloaded": ttft0, "tpot_s_unloaded": tpot0, "decode_batch_bound": batch})
    return survivors, pruned


def _optimistic(s: dict, objective: str) -> float:
    """The bound to sort and prune by (smaller is better)."""
    if objective == "min_cost":
        return s["cost_lower_usd_per_hour"]
    return -s["rate_hi_rps"] / s["usd_per_hour_per_replica"]


def _achieved(row: dict, objective: str) -> float:
    if objective == "min_cost":
        return row["usd_per_hour"]
    return -row["capacity_rps"] / row["usd_per_hour_per_replica"]


PLAN_KEYS = ("gpu", "tp", "pp", "ep", "max_num_seqs", "max_batched_tokens", "chunked_prefill", "order",
             "disaggregated", "pd_ratio")


def search_serving_plans(llm: LlmSpec, trace, slo: dict, space: ServingSpace, objective: str = "min_cost",
                         target_rate_rps: float | None = None, cost_method: str = "calibrated",
                         router: str = "least_outstanding", sweep: SweepOptions = SweepOptions(),
                         capacity_requests: int = 300, simulate_at_least: int = 4,
                         costs: dict | None = None) -> SearchResult:
    """Search `space` for the plans serving `trace` (rescaled to target_rate_rps when given) within
    `slo`; see the module doc. objective: 'min_cost' (USD/hour at the target rate) or
    'max_goodput_per_usd' (requests per USD one replica serves at its capacity).
    costs: GPU name -> CostModel already built (calibrated ones take seconds to fit)."""
    started = time.perf_counter()
    if objective not in OBJECTIVES:
        raise SearchError(f"objective: {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    if not any(slo.get(k) for k in ("ttft_s", "tpot_s", "e2e_s")):
        raise SearchError("slo: a plan search needs at least one of ttft_s, tpot_s, e2e_s")
    if target_rate_rps:
        trace = trace.rescale_rate(target_rate_rps)
    rate = float(trace.rate_per_s)
    candidates = space.candidates()
    models: dict = dict(costs or {})
    survivors, pruned = screen(llm, trace, slo, space, rate, cost_method, models)
    survivors.sort(key=lambda s: (_optimistic(s, objective), candidate_label(s)))
    inputs = ServingInputs(llm, trace, slo, cost_method, router, capacity_requests, costs=models)
    fingerprint = stable_hash(llm, trace.arrival_s, trace.prompt_tokens, trace.output_tokens, slo,
                              cost_method, router, capacity_requests, inputs.rate_tolerance)
    result = SearchResult([], pruned, objective, rate, len(candidates))
    if True not in space.disaggregated:
        result.notes.append("disaggregated prefill/decode plans were not asked for (search.disaggregated: [false])")
    wave = max(2, sweep.parallelism)
    best: float | None = None
    queue = list(survivors)
    while queue:
        batch = []
        while queue and len(batch) < wave:
            s = queue.pop(0)
            done = len(result.rows) + len(batch)
            if best is not None and done >= simulate_at_least and _optimistic(s, objective) >= best:
                _drop(result.pruned, s, "dominated", _dominated_reason(s, objective, best))
                continue
            batch.append(s)
        if not batch:
            continue
        # Least cost only needs the replica count: search the grid target / k; the other objective
        # needs the capacity itself: bisection to the tolerance.
        grid = {"target_rps": rate, "max_replicas": space.max_replicas} if objective == "min_cost" else {}
        caps = sweep.run(replica_capacity,
                         [{**{k: s[k] for k in (*PLAN_KEYS, "rate_hi_rps", "replicas_lower")}, **grid} for s in batch],
                         inputs, fingerprint, "capacity search")
        result.cached += caps.cached
        to_verify, kept = [], []
        for s, cap, fresh in zip(batch, caps.results, caps.fresh):
            result.simulations += cap["simulations"] if fresh else 0
            if cap["capacity_rps"] <= 0:
                _drop(result.pruned, s, "simulation", f"misses the SLO even at {cap['capacity_hi_rps']:.3g} req/s "
                                                      f"per replica ({cap['simulations']} rates simulated)")
                continue
            replicas = math.ceil(rate / cap["capacity_rps"] - 1e-9)
            if replicas > space.max_replicas:
                _drop(result.pruned, s, "capacity", f"{cap['capacity_rps']:.2f} req/s per replica needs {replicas} "
                                                    f"replicas; limit {space.max_replicas}")
                continue
            to_verify.append({**{k: s[k] for k in PLAN_KEYS}, "replicas": replicas, "max_replicas": space.max_replicas})
            kept.append((s, cap))
        if not to_verify:
            continue
        verified = sweep.run(verify_deployment, to_verify, inputs, fingerprint, "verifying")
        result.cached += verified.cached
        for (s, cap), row, fresh in zip(kept, verified.results, verified.fresh):
            result.simulations += row["verify_simulations"] if fresh else 0
            row.update(plan=candidate_label(s), capacity_rps=cap["capacity_rps"], bound_rps=s["rate_hi_rps"],
                       capacity_exact=cap["exact"],
                       capacity_simulations=cap["simulations"], usd_per_hour_per_replica=s["usd_per_hour_per_replica"],
                       requests_per_usd_at_capacity=cap["capacity_rps"] * 3600.0 / s["usd_per_hour_per_replica"])
            result.rows.append(row)
            if row["meets_slo"]:
                value = _achieved(row, objective)
                best = value if best is None else min(best, value)
    _rank(result, slo)
    result.wall_s = time.perf_counter() - started
    return result


def _dominated_reason(s: dict, objective: str, best: float) -> str:
    if objective == "min_cost":
        return (f"needs >= {s['replicas_lower']} replicas: >= {s['cost_lower_usd_per_hour']:.2f} USD/h, "
                f"not below the best verified {best:.2f} USD/h")
    return (f"at most {s['rate_hi_rps'] * 3600 / s['usd_per_hour_per_replica']:.0f} requests/USD, "
            f"not above the best verified {-best * 3600:.0f}")


def _rank(result: SearchResult, slo: dict) -> None:
    q = f"p{float(slo.get('percentile', 90)):g}"
    if result.objective == "min_cost":
        result.rows.sort(key=lambda r: (not r["meets_slo"], r["usd_per_hour"], r[f"ttft_s_{q}"], r["plan"]))
    else:
        result.rows.sort(key=lambda r: (not r["meets_slo"], -r["requests_per_usd_at_capacity"], r["plan"]))
    feasible = [r for r in result.rows if r["meets_slo"]]
    result.front = pareto_front(feasible, ["usd_per_hour", f"ttft_s_{q}", f"tpot_s_{q}"])
    on_front = {id(r) for r in result.front}
    for i, r in enumerate(result.rows, 1):
        r["rank"] = i
        r["pareto"] = id(r) in on_front
