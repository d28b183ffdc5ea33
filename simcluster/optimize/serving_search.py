"""Serving plan search v0: GPU type × TP × replica count for a request rate under TTFT/TPOT SLOs.

Each (GPU, TP, batching) candidate is first checked analytically: does it fit in memory, can it
meet the SLO with the cluster empty, how many replicas does its peak throughput demand at least.
Survivors are simulated on the workload; the replica count is searched upward from that bound
until the SLO holds. Candidates are ranked by USD/hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from simcluster.cost import cost_model_for
from simcluster.hardware.gpu import load_gpu
from simcluster.hardware.node import default_node_for
from simcluster.llm.memory import serving_memory
from simcluster.llm.spec import LlmSpec
from simcluster.serving.replica import Batching
from simcluster.serving.simulate import ReplicaGroup, simulate_serving
from simcluster.serving.step import StepTimer


@dataclass(frozen=True)
class Candidate:
    gpu: str
    tp: int
    max_num_seqs: int
    max_batched_tokens: int

    def label(self) -> str:
        return f"{self.gpu} TP{self.tp} seqs{self.max_num_seqs} tok{self.max_batched_tokens}"


@dataclass
class SearchResult:
    rows: list[dict]                     # simulated plans, best first
    pruned: list[dict]                   # candidate, stage, reason
    simulations: int = 0
    candidates: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def best(self) -> dict | None:
        feasible = [r for r in self.rows if r["meets_slo"]]
        return feasible[0] if feasible else None


def _percentile_value(values, q: float) -> float:
    import numpy as np
    return float(np.percentile(values, q))


def unloaded_latency(timer: StepTimer, prompt: int, context: int) -> tuple[float, float]:
    """(TTFT, TPOT) of one request alone on the replica: a full prefill, then batch-1 decodes."""
    ttft = timer.time_s(n_prefill=1, prefill_new=prompt, prefill_ctx=prompt, prefill_pairs=prompt * (prompt + 1) / 2)
    tpot = timer.time_s(n_decode=1, decode_ctx=context)
    return ttft, tpot


def peak_requests_per_s(timer: StepTimer, batch: int, prompt: float, output: float) -> float:
    """Upper bound on one replica's request throughput: prefill each prompt once, decode at `batch`.

    Time per request ≥ prefill(prompt) + output × decode_step(batch) / batch.
    """
    p = int(max(1, prompt))
    prefill = timer.time_s(n_prefill=1, prefill_new=p, prefill_ctx=p, prefill_pairs=p * (p + 1) / 2)
    ctx = int(prompt + output / 2) * batch
    decode = timer.time_s(n_decode=batch, decode_ctx=ctx)
    return 1.0 / (prefill + output * decode / batch)


def search_serving_plans(llm: LlmSpec, trace, slo: dict, gpus: list[str], tps: list[int],
                         max_num_seqs: list[int], max_batched_tokens: list[int], max_replicas: int,
                         cost_method: str = "calibrated", router: str = "least_outstanding",
                         progress=None) -> SearchResult:
    """Cheapest replica count per candidate that meets `slo` on `trace`; see module doc."""
    pct = slo.get("percentile", 90)
    prompt_p = _percentile_value(trace.prompt_tokens, pct)
    output_p = _percentile_value(trace.output_tokens, pct)
    rate = len(trace) / max(trace.duration_s, 1e-9)
    candidates = [Candidate(g, t, s, b) for g in gpus for t in tps for s in max_num_seqs for b in max_batched_tokens]
    result = SearchResult([], [], candidates=len(candidates))
    models = {g: cost_model_for(g, cost_method) for g in gpus}
    for cand in candidates:
        if progress:
            progress(cand)
        gpu = load_gpu(cand.gpu)
        node = default_node_for(cand.gpu)
        if cand.tp > node.gpus_per_node:
            result.pruned.append({"plan": cand.label(), "stage": "topology",
                                  "reason": f"TP{cand.tp} exceeds {node.gpus_per_node} GPUs per {node.name} node"})
            continue
        if llm.n_kv_heads % cand.tp and cand.tp % llm.n_kv_heads or llm.n_heads % cand.tp:
            result.pruned.append({"plan": cand.label(), "stage": "shape",
                                  "reason": f"{llm.n_heads} heads do not split over TP{cand.tp}"})
            continue
        mem = serving_memory(llm, gpu.memory_bytes, cand.tp, max_batched_tokens=cand.max_batched_tokens)
        longest = int(trace.prompt_tokens.max() + trace.output_tokens.max())
        if not mem.fits or mem.kv_capacity_tokens < longest:
            result.pruned.append({"plan": cand.label(), "stage": "memory",
                                  "reason": f"weights {mem.weight_bytes / 2**30:.1f} GiB leave KV room for "
                                            f"{max(0, mem.kv_capacity_tokens)} tokens; longest request needs {longest}"})
            continue
        timer = StepTimer(llm, models[cand.gpu], cand.tp)
        ttft0, tpot0 = unloaded_latency(timer, int(prompt_p), int(prompt_p + output_p / 2))
        if slo.get("ttft_s") and ttft0 > slo["ttft_s"] or slo.get("tpot_s") and tpot0 > slo["tpot_s"]:
            result.pruned.append({"plan": cand.label(), "stage": "unloaded SLO",
                                  "reason": f"alone: TTFT {ttft0 * 1e3:.0f} ms, TPOT {tpot0 * 1e3:.1f} ms "
                                            f"(p{pct:g} prompt {prompt_p:.0f} tokens)"})
            continue
        mean_ctx = float(trace.prompt_tokens.mean() + trace.output_tokens.mean() / 2)
        batch = int(max(1, min(cand.max_num_seqs, mem.kv_capacity_tokens // max(mean_ctx, 1))))
        peak = peak_requests_per_s(timer, batch, float(trace.prompt_tokens.mean()), float(trace.output_tokens.mean()))
        lower = max(1, math.ceil(rate / peak))
        if lower > max_replicas:
            result.pruned.append({"plan": cand.label(), "stage": "throughput bound",
                                  "reason": f"needs >= {lower} replicas at {peak:.2f} req/s each; limit {max_replicas}"})
            continue
        row = _search_replicas(llm, trace, slo, gpu, models[cand.gpu], cand, lower, max_replicas, router, result)
        if row is None:
            result.pruned.append({"plan": cand.label(), "stage": "simulation",
                                  "reason": f"misses the SLO even with {max_replicas} replicas"})
        else:
            result.rows.append(row)
    result.rows.sort(key=lambda r: (not r["meets_slo"], r["usd_per_hour"], r["ttft_s_p90"]))
    return result


def _simulate(llm, trace, slo, gpu, cost, cand: Candidate, replicas: int, router: str) -> dict:
    group = ReplicaGroup(gpu, cost, replicas, cand.tp, batching=Batching(cand.max_num_seqs, cand.max_batched_tokens))
    res = simulate_serving(llm, trace, [group], router)
    s = res.summary(slo)
    from simcluster.serving.metrics import slo_met
    return {
        "gpu": cand.gpu, "tp": cand.tp, "replicas": replicas, "gpus": res.gpu_count,
        "max_num_seqs": cand.max_num_seqs, "max_batched_tokens": cand.max_batched_tokens,
        "usd_per_hour": res.price_usd_per_hour,
        "ttft_s_p50": s["ttft_s_p50"], "ttft_s_p90": s["ttft_s_p90"],
        "tpot_s_p50": s["tpot_s_p50"], "tpot_s_p90": s["tpot_s_p90"],
        "request_throughput_per_s": s["request_throughput_per_s"],
        "output_token_throughput_per_s": s["output_token_throughput_per_s"],
        "slo_attainment": s["slo_attainment"],
        "usd_per_million_output_tokens": s["usd_per_million_output_tokens"],
        "meets_slo": bool(slo_met(s, slo) and res.unfinished == 0),
    }


def _search_replicas(llm, trace, slo, gpu, cost, cand, lower, upper, router, result) -> dict | None:
    """Smallest replica count in [lower, upper] meeting the SLO: doubling, then bisection."""
    tried: dict[int, dict] = {}

    def run(n):
        if n not in tried:
            tried[n] = _simulate(llm, trace, slo, gpu, cost, cand, n, router)
            result.simulations += 1
        return tried[n]

    lo, n = lower - 1, lower          # lo: largest count known to miss (or below the bound)
    while not run(n)["meets_slo"]:
        if n >= upper:
            return None
        lo, n = n, min(upper, n * 2)
    hi = n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if run(mid)["meets_slo"]:
            hi = mid
        else:
            lo = mid
    return tried[hi]
