"""Simulated capacity of one serving replica, and verification of a whole deployment.

Both are pure functions of (candidate dict, ServingInputs) so the sweep runner can farm them out
and cache them. Capacity is the highest request rate one replica sustains within the SLO: the
first `capacity_requests` requests of the workload are replayed at a rate found by bisection
(Trace.rescale_rate keeps their burstiness) and the SLO is judged on the middle of them
(measured_window: warm-up and drain excluded). A run stops at the horizon after which no request
could still meet the SLO, so an overloaded rate costs little simulated time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from simcluster.cost import cost_model_for
from simcluster.hardware.gpu import load_gpu
from simcluster.llm.spec import LlmSpec
from simcluster.serving.metrics import LATENCIES
from simcluster.serving.replica import Batching
from simcluster.serving.simulate import ReplicaGroup, ServingResult, simulate_serving
from simcluster.workload import Trace

MAX_BISECTIONS = 8
VERIFY_EXTRA_REPLICAS = 2


@dataclass(frozen=True)
class ServingInputs:
    """What every capacity search and verification of one plan search shares."""

    llm: LlmSpec
    trace: Trace                  # the workload at the target rate
    slo: dict                     # ttft_s, tpot_s, e2e_s (None = no target), percentile
    cost_method: str = "calibrated"
    router: str = "least_outstanding"
    capacity_requests: int = 300
    rate_tolerance: float = 0.05  # bisection stops when the bracket is this fraction of the rate
    costs: dict = field(default_factory=dict, compare=False)  # GPU name -> CostModel, built once

    def cost(self, gpu: str):
        """The GPU's cost model: fitting a calibrated one takes seconds, so searches pass them in."""
        return self.costs[gpu] if gpu in self.costs else cost_model_for(gpu, self.cost_method)


def candidate_label(c: dict) -> str:
    parts = [c["gpu"], f"TP{c['tp']}"]
    if c.get("pp", 1) > 1:
        parts.append(f"PP{c['pp']}")
    if c.get("ep", 1) > 1:
        parts.append(f"EP{c['ep']}")
    parts.append(f"seqs{c['max_num_seqs']} tok{c['max_batched_tokens']}")
    if not c.get("chunked_prefill", True):
        parts.append("unchunked")
    if c.get("order", "decode_first") != "decode_first":
        parts.append(c["order"])
    if c.get("disaggregated"):
        parts.append(f"P/D {c['pd_ratio']}")
    return " ".join(parts)


def pd_split(c: dict) -> tuple[int, int]:
    """(prefill, decode) replicas per unit of a disaggregated candidate; (1, 0) when aggregated."""
    if not c.get("disaggregated"):
        return 1, 0
    p, d = c["pd_ratio"].split(":")
    return int(p), int(d)


def gpus_per_unit(c: dict) -> int:
    p, d = pd_split(c)
    return (p + d) * c["tp"] * c.get("pp", 1)


def replica_groups(c: dict, units: int, cost) -> list[ReplicaGroup]:
    """The serving simulator's groups for `units` units of candidate `c`: `units` replicas, or for a
    disaggregated candidate units × p prefill and units × d decode replicas (pd_ratio 'p:d')."""
    batching = Batching(c["max_num_seqs"], c["max_batched_tokens"], c.get("chunked_prefill", True),
                        c.get("order", "decode_first"))
    gpu = load_gpu(c["gpu"])
    shape = (c["tp"], c.get("pp", 1), c.get("ep", 1), batching)
    if not c.get("disaggregated"):
        return [ReplicaGroup(gpu, cost, units, *shape)]
    p, d = pd_split(c)
    return [ReplicaGroup(gpu, cost, units * p, *shape, role="prefill"),
            ReplicaGroup(gpu, cost, units * d, *shape, role="decode")]


def horizon_s(trace: Trace, slo: dict) -> float | None:
    """Time after which an unfinished request has missed a target whatever happens next.

    A request arriving at a that meets TTFT and TPOT finishes by a + ttft + tpot·(out - 1); with an
    E2E target by a + e2e. None when no target bounds the finish time.
    """
    last = float(trace.arrival_s[-1])
    bounds = []
    if slo.get("e2e_s"):
        bounds.append(slo["e2e_s"])
    if slo.get("ttft_s") and slo.get("tpot_s"):
        bounds.append(slo["ttft_s"] + slo["tpot_s"] * float(np.max(trace.output_tokens)))
    return last + min(bounds) * 1.001 if bounds else None


def slo_holds(result: ServingResult, slo: dict, window: tuple[int, int] | None = None) -> tuple[bool, dict]:
    """Does every target hold at its percentile, counting unfinished requests as infinitely late?

    summarize() takes percentiles over finished requests only; a truncated run must not look good
    because its slowest requests never finished, so they enter here at +inf. window: judge only
    requests with ids in [lo, hi) (the others still load the replica).
    """
    q = float(slo.get("percentile", 90))
    summary = result.summary(slo)
    req = result.requests
    unfinished = result.unfinished
    if window is not None:
        ids = req["request_id"].to_numpy()
        req = req[(ids >= window[0]) & (ids < window[1])]
        unfinished = (window[1] - window[0]) - len(req)
    if req.empty:
        return False, summary
    ok = True
    pad = np.full(unfinished, 1e30)
    for key in LATENCIES:
        target = slo.get(key)
        if target is None:
            continue
        if key == "ttft_s":
            v = req["first_token_s"] - req["arrival_s"]
        elif key == "e2e_s":
            v = req["finish_s"] - req["arrival_s"]
        elif key == "queue_s":
            v = req["scheduled_s"] - req["arrival_s"]
        else:
            gaps = req["output_tokens"] - 1
            v = ((req["finish_s"] - req["first_token_s"]) / gaps.where(gaps > 0)).dropna()
        values = np.concatenate([v.to_numpy(dtype=np.float64), pad])
        if len(values) and np.percentile(values, q) > target:
            ok = False
    return ok, summary


def measured_window(n: int) -> tuple[int, int]:
    """Requests a capacity probe judges: the first 10 % arrive to an empty replica and the last
    20 % to one that is draining, both kinder than steady state, so only the middle counts."""
    return int(0.1 * n), max(int(0.1 * n) + 1, int(0.8 * n))


def _probe(inputs: ServingInputs, c: dict, sample: Trace, rate_rps: float, cost) -> bool:
    trace = sample.rescale_rate(rate_rps)
    res = simulate_serving(inputs.llm, trace, replica_groups(c, 1, cost), inputs.router,
                           until_s=horizon_s(trace, inputs.slo))
    return slo_holds(res, inputs.slo, measured_window(len(sample)))[0]


def replica_capacity(c: dict, inputs: ServingInputs) -> dict:
    """Highest request rate one replica (one P/D unit) of candidate `c` sustains within the SLO.

    c holds the plan fields and `rate_hi_rps`, the analytic bound where the bracket starts; with
    `target_rps` (and replicas_lower, max_replicas) only the grid target / k is searched.
    Returns capacity_rps (0 when even hi / 2^8 misses; never above the bound), the probes
    [(rate, met)], their count and bound_reached (False when the bound itself met the SLO).
    """
    n = min(inputs.capacity_requests, len(inputs.trace))
    sample = inputs.trace.head(n)
    cost = inputs.cost(c["gpu"])
    probes: list[tuple[float, bool]] = []

    def met(rate: float) -> bool:
        ok = _probe(inputs, c, sample, rate, cost)
        probes.append((rate, ok))
        return ok

    if c.get("target_rps"):
        return _replicas_for_target(c, met, probes, n)
    hi = float(c["rate_hi_rps"])
    lo = 0.0
    if met(hi):
        # The bound is a steady-state ceiling; a short replay that beats it is a transient (the
        # queue never built up), so the capacity is clamped to the bound.
        lo = hi
    for _ in range(MAX_BISECTIONS):
        if hi - lo <= inputs.rate_tolerance * max(lo, hi / 2):
            break
        mid = (lo + hi) / 2
        if met(mid):
            lo = mid
        else:
            hi = mid
    return {"capacity_rps": lo, "capacity_hi_rps": hi, "probes": probes, "simulations": len(probes),
            "bound_reached": not probes[0][1], "exact": True, "sample_requests": n}


def _replicas_for_target(c: dict, met, probes: list, n: int) -> dict:
    """Capacity on the grid that decides a replica count: target / k for k replicas.

    For the least-cost objective only the smallest k with capacity >= target / k matters, so the
    bisection runs over k in [replicas_lower, max_replicas] (one probe when the bound's k holds)
    and the capacity reported is target / k, a simulated lower bound, with target / (k - 1) missed
    (or excluded by the bound).
    """
    target = float(c["target_rps"])
    k_max = int(c["max_replicas"])
    lo_k = int(c["replicas_lower"]) - 1         # largest count known to miss (the bound says so)
    step = 1
    hi_k = lo_k + step
    # Galloping search upward from the bound's count (the answer is usually within a few), then
    # bisection inside the last gap.
    while not met(target / hi_k):
        lo_k = hi_k
        if hi_k >= k_max:
            return {"capacity_rps": 0.0, "capacity_hi_rps": target / k_max, "probes": probes,
                    "simulations": len(probes), "bound_reached": True, "exact": False, "sample_requests": n}
        step *= 2
        hi_k = min(k_max, lo_k + step)
    while hi_k - lo_k > 1:
        mid = (lo_k + hi_k) // 2
        if met(target / mid):
            hi_k = mid
        else:
            lo_k = mid
    return {"capacity_rps": target / hi_k, "capacity_hi_rps": target / lo_k if lo_k > 0 else float(c["rate_hi_rps"]),
            "probes": probes, "simulations": len(probes), "bound_reached": len(probes) > 1, "exact": False,
            "sample_requests": n}


def _row(c: dict, res: ServingResult, meets: bool, summary: dict, slo: dict) -> dict:
    q = f"p{float(slo.get('percentile', 90)):g}"
    row = {"gpu": c["gpu"], "tp": c["tp"], "pp": c.get("pp", 1), "ep": c.get("ep", 1),
           "max_num_seqs": c["max_num_seqs"], "max_batched_tokens": c["max_batched_tokens"],
           "chunked_prefill": c.get("chunked_prefill", True), "order": c.get("order", "decode_first"),
           "disaggregated": bool(c.get("disaggregated")), "pd_ratio": c.get("pd_ratio") or "",
           "replicas": c["replicas"], "gpus": res.gpu_count, "usd_per_hour": res.price_usd_per_hour}
    for key in ("ttft_s_p50", "ttft_s_p90", "tpot_s_p50", "tpot_s_p90", "e2e_s_p50", "e2e_s_p90",
                f"ttft_s_{q}", f"tpot_s_{q}", f"e2e_s_{q}", "request_throughput_per_s",
                "output_token_throughput_per_s", "goodput_per_s", "slo_attainment",
                "usd_per_million_output_tokens"):
        row[key] = summary.get(key, math.nan)
    row["goodput_per_usd"] = row["goodput_per_s"] * 3600.0 / row["usd_per_hour"] if row["usd_per_hour"] else math.nan
    row["unfinished"] = res.unfinished
    row["meets_slo"] = bool(meets)
    return row


def verify_deployment(c: dict, inputs: ServingInputs) -> dict:
    """Simulate c['replicas'] replicas (P/D units) on the whole workload; add up to 2 until the SLO
    holds. Returns the row of the last count tried, with verify_simulations."""
    cost = inputs.cost(c["gpu"])
    start = int(c["replicas"])
    limit = min(int(c.get("max_replicas", start + VERIFY_EXTRA_REPLICAS)), start + VERIFY_EXTRA_REPLICAS)
    tried = 0
    for count in range(start, max(start, limit) + 1):
        res = simulate_serving(inputs.llm, inputs.trace, replica_groups(c, count, cost), inputs.router,
                               until_s=horizon_s(inputs.trace, inputs.slo))
        tried += 1
        meets, summary = slo_holds(res, inputs.slo)
        if meets:
            break
    row = _row({**c, "replicas": count}, res, meets, summary, inputs.slo)
    row["verify_simulations"] = tried
    row["replicas_from_capacity"] = start
    return row
