"""Serving plan search: GPU × TP × PP × EP × batching × chunking × scheduler order, replicas sized
by simulated capacity.

1. Screen every candidate analytically (serving_bounds.py): shape and topology, memory (the
   longest request must fit in the KV cache), the SLO with the replica empty, and an optimistic
   throughput bound that gives the fewest replicas the target rate could need.
2. Branch and bound, in two stages: first one batching variant per deployment shape (GPU, TP, PP,
   EP, P/D split), then every batching variant of the `tune_top` best shapes (the others are
   dropped as 'not tuned'). Candidates go in order of their optimistic objective, a wave at a time
   through the sweep runner. Each gets its per-replica capacity (bisection over the request rate,
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
from simcluster.optimize.cache import code_fingerprint, object_fingerprint, stable_hash
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
                         costs: dict | None = None, tune_top: int = 2) -> SearchResult:
    """Search `space` for the plans serving `trace` (rescaled to target_rate_rps when given) within
    `slo`; see the module doc. objective: 'min_cost' (USD/hour at the target rate) or
    'max_goodput_per_usd' (requests per USD one replica serves at its capacity).
    costs: GPU name -> CostModel already built (calibrated ones take seconds to fit).
    tune_top: deployment shapes whose batching variants are all simulated (see stage 2)."""
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
    fingerprint = serving_fingerprint(inputs)
    result = SearchResult([], pruned, objective, rate, len(candidates))
    if True not in space.disaggregated:
        result.notes.append("disaggregated prefill/decode plans were not asked for (search.disaggregated: [false])")
    run = _BranchAndBound(result, inputs, fingerprint, sweep, space, objective, rate, simulate_at_least)
    # Stage 1: one batching variant per deployment shape (the first in the space's order that
    # survived screening). Stage 2: every batching variant of the `tune_top` best shapes.
    first: dict = {}
    for sv in survivors:
        first.setdefault(_shape(sv), sv)
    stage1 = list(first.values())
    run.explore(stage1)
    ranked = sorted((r for r in result.rows if r["meets_slo"]), key=lambda r: _achieved(r, objective))
    top_shapes = list(dict.fromkeys(_shape(r) for r in ranked))[:tune_top]
    stage2 = [sv for sv in survivors if _shape(sv) in top_shapes and sv not in stage1]
    run.explore(stage2)
    untuned = [sv for sv in survivors if sv not in stage1 and sv not in stage2]
    for sv in untuned:
        _drop(result.pruned, sv, "not tuned", f"batching variant of a shape outside the best {tune_top}; "
                                              f"that shape's first variant was simulated or dominated")
    if untuned:
        result.notes.append(f"batching limits, chunking and scheduler order were tuned for the best {tune_top} "
                            f"deployment shapes only (search.tune_top)")
    _rank(result, slo)
    result.wall_s = time.perf_counter() - started
    return result


BATCHING_KEYS = ("max_num_seqs", "max_batched_tokens", "chunked_prefill", "order")


def _shape(c: dict) -> tuple:
    """A candidate without its batching knobs: GPU, parallelism, P/D split."""
    # Rows spell an aggregated plan's P/D ratio '' where candidates have None.
    return tuple(c[k] or None if k == "pd_ratio" else c[k] for k in PLAN_KEYS if k not in BATCHING_KEYS)


class _BranchAndBound:
    """Capacity search and verification, a wave of candidates at a time, dropping those whose
    optimistic bound cannot beat the best verified plan (after `simulate_at_least` simulated)."""

    def __init__(self, result, inputs, fingerprint, sweep, space, objective, rate, simulate_at_least):
        self.result, self.inputs, self.fingerprint, self.sweep = result, inputs, fingerprint, sweep
        self.space, self.objective, self.rate = space, objective, rate
        self.simulate_at_least = simulate_at_least
        self.best: float | None = None
        for row in result.rows:
            self._update(row)

    def _update(self, row: dict) -> None:
        if row["meets_slo"]:
            value = _achieved(row, self.objective)
            self.best = value if self.best is None else min(self.best, value)

    def explore(self, candidates: list[dict]) -> None:
        wave = max(2, self.sweep.parallelism)
        queue = sorted(candidates, key=lambda c: (_optimistic(c, self.objective), candidate_label(c)))
        while queue:
            batch = []
            while queue and len(batch) < wave:
                c = queue.pop(0)
                done = len(self.result.rows) + len(batch)
                if self.best is not None and done >= self.simulate_at_least \
                        and _optimistic(c, self.objective) >= self.best - 1e-9 * abs(self.best):
                    _drop(self.result.pruned, c, "dominated", _dominated_reason(c, self.objective, self.best))
                    continue
                batch.append(c)
            if batch:
                self._simulate(batch)

    def _simulate(self, batch: list[dict]) -> None:
        result, space, rate = self.result, self.space, self.rate
        # Least cost only needs the replica count: search the grid target / k; the other objective
        # needs the capacity itself: bisection to the tolerance.
        grid = {"target_rps": rate, "max_replicas": space.max_replicas} if self.objective == "min_cost" else {}
        caps = self.sweep.run(replica_capacity,
                              [{**{k: c[k] for k in (*PLAN_KEYS, "rate_hi_rps", "replicas_lower")}, **grid}
                               for c in batch], self.inputs, self.fingerprint, "capacity search")
        result.cached += caps.cached
        to_verify, kept = [], []
        for c, cap, fresh in zip(batch, caps.results, caps.fresh):
            result.simulations += cap["simulations"] if fresh else 0
            if cap["capacity_rps"] <= 0:
                _drop(result.pruned, c, "simulation", f"misses the SLO even at {cap['capacity_hi_rps']:.3g} req/s "
                                                      f"per replica ({cap['simulations']} rates simulated)")
                continue
            replicas = math.ceil(rate / cap["capacity_rps"] - 1e-9)
            if replicas > space.max_replicas:
                _drop(result.pruned, c, "capacity", f"{cap['capacity_rps']:.2f} req/s per replica needs {replicas} "
                                                    f"replicas; limit {space.max_replicas}")
                continue
            to_verify.append({**{k: c[k] for k in PLAN_KEYS}, "replicas": replicas, "max_replicas": space.max_replicas})
            kept.append((c, cap))
        if not to_verify:
            return
        verified = self.sweep.run(verify_deployment, to_verify, self.inputs, self.fingerprint, "verifying")
        result.cached += verified.cached
        for (c, cap), row, fresh in zip(kept, verified.results, verified.fresh):
            result.simulations += row["verify_simulations"] if fresh else 0
            row.update(plan=candidate_label(c), capacity_rps=cap["capacity_rps"], bound_rps=c["rate_hi_rps"],
                       capacity_exact=cap["exact"], capacity_simulations=cap["simulations"],
                       usd_per_hour_per_replica=c["usd_per_hour_per_replica"],
                       requests_per_usd_at_capacity=cap["capacity_rps"] * 3600.0 / c["usd_per_hour_per_replica"])
            result.rows.append(row)
            self._update(row)


def serving_fingerprint(inputs: ServingInputs) -> str:
    """What a cached capacity or verification depends on besides its candidate: the inputs, the
    fitted cost models and the code of the serving simulator and of this search."""
    import simcluster.optimize.serving_capacity as capacity
    import simcluster.serving.simulate as serving
    return stable_hash(inputs.llm, inputs.trace.arrival_s, inputs.trace.prompt_tokens, inputs.trace.output_tokens,
                       inputs.slo, inputs.cost_method, inputs.router, inputs.capacity_requests, inputs.rate_tolerance,
                       {g: object_fingerprint(cm) for g, cm in sorted(inputs.costs.items())},
                       code_fingerprint(serving, capacity))


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
