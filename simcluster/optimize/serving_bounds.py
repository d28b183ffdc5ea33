"""Analytic screens of one serving replica: does it fit, can it meet the SLO alone, how fast at most.

These run before any simulation and decide which candidates are worth simulating. Each returns a
number and the search turns it into a reason when a candidate is dropped. The throughput figure is
an optimistic bound (the simulated capacity stays below it, tests/optimize check that), so
dropping a candidate because even this bound is too slow or too costly is safe.
"""

from __future__ import annotations

import math

from simcluster.serving.step import StepTimer


def prefill_time_s(timer: StepTimer, prompt_tokens: int) -> float:
    """One prompt prefilled alone in one iteration (causal pairs p(p+1)/2)."""
    p = max(1, int(prompt_tokens))
    return timer.time_s(n_prefill=1, prefill_new=p, prefill_ctx=p, prefill_pairs=p * (p + 1) / 2)


def decode_step_s(timer: StepTimer, batch: int, context_tokens: float) -> float:
    """One decode iteration of `batch` sequences each holding `context_tokens` keys."""
    return timer.time_s(n_decode=batch, decode_ctx=int(batch * max(1.0, context_tokens)))


def unloaded_latency_s(timer: StepTimer, prompt_tokens: int, context_tokens: float) -> tuple[float, float]:
    """(TTFT, TPOT) of one request alone on the replica: its prefill, then batch-1 decodes."""
    return prefill_time_s(timer, prompt_tokens), decode_step_s(timer, 1, context_tokens)


def tpot_batch_limit(timer: StepTimer, tpot_s: float | None, context_tokens: float, max_batch: int) -> int:
    """Largest decode batch whose iteration still fits in the TPOT target (0: not even one).

    Decode step time grows with batch (more KV to read, more rows per GEMM), so bisection over
    [1, max_batch] finds the edge. Without a TPOT target the limit is max_batch.
    """
    if tpot_s is None:
        return max_batch
    if decode_step_s(timer, 1, context_tokens) > tpot_s:
        return 0
    lo, hi = 1, max_batch
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if decode_step_s(timer, mid, context_tokens) <= tpot_s:
            lo = mid
        else:
            hi = mid - 1
    return lo


def capacity_bound_rps(timer: StepTimer, prompt_mean: float, output_mean: float, decode_batch: int,
                       max_batched_tokens: int) -> float:
    """Optimistic requests/s of one replica: the smaller of a token bound and a decode bound.

    Token bound: every prompt and output token passes the linear layers once; no token is cheaper
    than in a full iteration of max_batched_tokens prefill tokens (the GEMMs' best efficiency), and
    attention is left out: rps <= 1 / ((P + O) · t_token).
    Decode bound: at most `decode_batch` sequences emit a token per iteration, and an iteration
    carrying b decodes lasts at least a pure decode step of b (prefill chunks only add time):
    rps <= b / (step(b) · O).
    """
    chunk = max(1, int(max_batched_tokens))
    t_token = timer.time_s(n_prefill=1, prefill_new=chunk, prefill_ctx=chunk, prefill_pairs=0.0) / chunk
    token_bound = 1.0 / max(1e-12, (prompt_mean + output_mean) * t_token)
    if decode_batch < 1:
        return 0.0
    if output_mean <= 1:
        return token_bound
    step = decode_step_s(timer, decode_batch, prompt_mean + output_mean / 2)
    decode_bound = decode_batch / (step * max(1.0, output_mean - 1))
    return min(token_bound, decode_bound)


def replicas_lower_bound(rate_rps: float, capacity_rps: float) -> int:
    """Replicas needed at least when each serves at most capacity_rps (inf when it serves none)."""
    if capacity_rps <= 0:
        return math.inf
    return max(1, math.ceil(rate_rps / capacity_rps - 1e-9))
