"""Serving metrics: per-request latencies and one flat summary of a run.

Names follow the serving community's benchmarks (vLLM, SGLang, DistServe): TTFT, TPOT, ITL, E2E,
throughput, goodput. Units are in every key. Latency statistics count **completed** requests
only (finish_s is finite); SLO attainment divides by every submitted request, so a request that
never finished is a miss.

Percentiles use numpy's default 'linear' method (type 7 of Hyndman and Fan, 1996): with the n
values sorted, the p-th percentile sits at index h = (n - 1) p / 100, interpolated linearly
between the neighbours of h.

The simulator records no per-token times. ITL figures therefore come from each request's mean
gap (its TPOT) and, where the records carry it, its worst gap `max_itl_s`:
- itl_s_mean is exact: all decode time over all inter-token gaps, sum(finish - first token) /
  sum(output_tokens - 1);
- itl_s_p50/p90/p99 are percentiles over all gaps with every gap of a request set to its mean
  (so they miss spread inside a request and under-state the tail);
- max_itl_s_{mean,p50,p90,p99} are statistics of the per-request worst gap, the tail to watch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

REQUIRED_COLUMNS = ("request_id", "replica", "arrival_s", "prompt_tokens", "output_tokens", "cached_tokens",
                    "scheduled_s", "first_token_s", "finish_s", "preemptions")
PERCENTILES = (50.0, 90.0, 99.0)
LATENCIES = ("ttft_s", "tpot_s", "e2e_s", "queue_s")
SLO_KEYS = LATENCIES + ("percentile",)
ITERATION_STATS = ("gpu_time_utilisation", "mfu", "mbu", "kv_cache_use_mean", "kv_cache_use_max")
# Timestamps of one request must not decrease along this order.
_TIME_ORDER = ("arrival_s", "scheduled_s", "first_token_s", "finish_s")
_TIME_SLACK_S = 1e-9  # float round-off of simulated clocks


class MetricsError(ValueError):
    """Records, an SLO or statistics that summarize() cannot use; the message names the column or key."""


def _check_records(records: pd.DataFrame) -> None:
    for column in REQUIRED_COLUMNS:
        if column not in records.columns:
            raise MetricsError(f"records: missing column {column!r}; expected columns {list(REQUIRED_COLUMNS)}")
    bad = ~(records["output_tokens"].to_numpy() >= 1)
    if bad.any():
        i = int(np.argmax(bad))
        raise MetricsError(f"records: request_id {records['request_id'].iloc[i]} column 'output_tokens' is "
                           f"{records['output_tokens'].iloc[i]}; expected >= 1")
    done = np.isfinite(records["finish_s"].to_numpy(dtype=np.float64))
    for earlier, later in zip(_TIME_ORDER, _TIME_ORDER[1:]):
        a = records[earlier].to_numpy(dtype=np.float64)
        b = records[later].to_numpy(dtype=np.float64)
        bad = done & ~(b >= a - _TIME_SLACK_S)
        if bad.any():
            i = int(np.argmax(bad))
            raise MetricsError(f"records: request_id {records['request_id'].iloc[i]} column {later!r} is {b[i]} "
                               f"< {earlier} {a[i]}; expected {' <= '.join(_TIME_ORDER)}")


def request_metrics(records: pd.DataFrame) -> pd.DataFrame:
    """A copy of `records` with ttft_s, tpot_s, e2e_s and queue_s added (seconds).

    ttft_s = first_token_s - arrival_s; tpot_s = (finish_s - first_token_s) / (output_tokens - 1),
    NaN for a one-token output (it has no gap); e2e_s = finish_s - arrival_s;
    queue_s = scheduled_s - arrival_s. Unfinished requests get NaN where a time is missing.
    """
    _check_records(records)
    out = records.copy()
    arrival = out["arrival_s"].to_numpy(dtype=np.float64)
    first = out["first_token_s"].to_numpy(dtype=np.float64)
    finish = out["finish_s"].to_numpy(dtype=np.float64)
    gaps = out["output_tokens"].to_numpy(dtype=np.float64) - 1.0
    out["ttft_s"] = first - arrival
    with np.errstate(divide="ignore", invalid="ignore"):
        out["tpot_s"] = np.where(gaps > 0, (finish - first) / np.where(gaps > 0, gaps, 1.0), np.nan)
    out["e2e_s"] = finish - arrival
    out["queue_s"] = out["scheduled_s"].to_numpy(dtype=np.float64) - arrival
    return out


def repeated_percentile(values: np.ndarray, counts: np.ndarray, q: float) -> float:
    """np.percentile(np.repeat(values, counts), q) (linear method) without building the repeat.

    Used for ITL: request i contributes counts[i] gaps of length values[i].
    """
    values = np.asarray(values, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.int64)
    keep = counts > 0
    values, counts = values[keep], counts[keep]
    total = int(counts.sum())
    if total == 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    values, cum = values[order], np.cumsum(counts[order])
    h = (total - 1) * q / 100.0
    low = int(np.floor(h))
    # The k-th element of the repeated sorted array is values[j] for the first j with cum[j] > k.
    j_low = int(np.searchsorted(cum, low, side="right"))
    j_high = int(np.searchsorted(cum, min(low + 1, total - 1), side="right"))
    return float(values[j_low] + (h - low) * (values[j_high] - values[j_low]))


def _pkey(q: float) -> str:
    return f"p{q:g}"


def _stats(prefix: str, values: np.ndarray, percentiles: tuple[float, ...]) -> dict:
    values = values[np.isfinite(values)]
    out = {f"{prefix}_mean": float(values.mean()) if len(values) else float("nan")}
    for q in percentiles:
        out[f"{prefix}_{_pkey(q)}"] = float(np.percentile(values, q, method="linear")) if len(values) else float("nan")
    return out


def _check_slo(slo: dict | None) -> dict:
    if slo is None:
        return {}
    if not isinstance(slo, dict):
        raise MetricsError(f"slo: {slo!r}; expected a mapping with keys {list(SLO_KEYS)}")
    for key, value in slo.items():
        if key not in SLO_KEYS:
            raise MetricsError(f"slo: unknown key {key!r}; expected keys {list(SLO_KEYS)}")
        if value is not None and (not isinstance(value, (int, float)) or not value > 0):
            raise MetricsError(f"slo: key {key!r} is {value!r}; expected a positive number or null")
    if not 0 < slo.get("percentile", 90) <= 100:
        raise MetricsError(f"slo: key 'percentile' is {slo['percentile']!r}; expected a number in (0, 100]")
    return dict(slo)


def _meets(metrics: pd.DataFrame, slo: dict) -> np.ndarray:
    """Per request: finished and within every latency target of `slo` (a one-token output has no
    TPOT, so it meets any TPOT target)."""
    ok = np.isfinite(metrics["finish_s"].to_numpy(dtype=np.float64))
    for key in LATENCIES:
        if slo.get(key) is not None:
            values = metrics[key].to_numpy(dtype=np.float64)
            within = values <= slo[key]
            if key == "tpot_s":
                within |= np.isnan(values)
            ok &= within
    return ok


def summarize(records: pd.DataFrame, duration_s: float, slo: dict | None = None, gpu_count: int = 1,
              price_usd_per_hour: float = 0.0, iteration_stats: dict | None = None, *,
              unfinished: int = 0) -> dict:
    """One flat dict of latency percentiles, throughput, goodput, SLO attainment and cost.

    records: one row per request (REQUIRED_COLUMNS, optional max_itl_s); duration_s: length of
    the run, s; slo: e.g. {"ttft_s": 0.5, "tpot_s": 0.05, "e2e_s": None, "percentile": 90};
    gpu_count: GPUs of the cluster; price_usd_per_hour: price of the whole cluster per hour;
    iteration_stats: figures from the iteration log (gpu_time_utilisation, mfu, mbu,
    kv_cache_use_mean, kv_cache_use_max, ...) copied into the result; unfinished: submitted
    requests absent from `records` (they count as SLO misses).

    goodput_per_s counts finished requests meeting every target of `slo` per second (all
    finished ones when no target is set); slo_attainment is that count over all submitted
    requests. usd_per_million_output_tokens and usd_per_million_tokens (input + output) divide
    the cluster's cost over duration_s by the tokens of finished requests.
    """
    if not np.isfinite(duration_s) or duration_s <= 0:
        raise MetricsError(f"duration_s is {duration_s!r}; expected a positive run length in s")
    if int(gpu_count) != gpu_count or gpu_count < 1:
        raise MetricsError(f"gpu_count is {gpu_count!r}; expected a positive whole number")
    if not np.isfinite(price_usd_per_hour) or price_usd_per_hour < 0:
        raise MetricsError(f"price_usd_per_hour is {price_usd_per_hour!r}; expected a price >= 0")
    slo = _check_slo(slo)
    metrics = request_metrics(records)
    done = metrics[np.isfinite(metrics["finish_s"].to_numpy(dtype=np.float64))]
    percentiles = PERCENTILES
    if slo and float(slo.get("percentile", 90)) not in PERCENTILES:
        percentiles = tuple(sorted(PERCENTILES + (float(slo.get("percentile", 90)),)))

    out: dict = {"requests": len(metrics) + int(unfinished), "completed": len(done)}
    for key in LATENCIES:
        out.update(_stats(key, done[key].to_numpy(dtype=np.float64), percentiles))

    gaps = done["output_tokens"].to_numpy(dtype=np.int64) - 1
    decode_s = (done["finish_s"] - done["first_token_s"]).to_numpy(dtype=np.float64)
    tpot = done["tpot_s"].to_numpy(dtype=np.float64)
    out["itl_s_mean"] = float(decode_s[gaps > 0].sum() / gaps.sum()) if gaps.sum() > 0 else float("nan")
    for q in percentiles:
        out[f"itl_s_{_pkey(q)}"] = repeated_percentile(np.nan_to_num(tpot), gaps, q)
    # A one-token output has no gap, so its max_itl_s (if any) is left out.
    max_itl = done["max_itl_s"].to_numpy(dtype=np.float64)[gaps > 0] if "max_itl_s" in done.columns else np.array([])
    out.update(_stats("max_itl_s", max_itl, percentiles))

    input_tokens = int(done["prompt_tokens"].sum())
    output_tokens = int(done["output_tokens"].sum())
    out["request_throughput_per_s"] = len(done) / duration_s
    out["input_token_throughput_per_s"] = input_tokens / duration_s
    out["output_token_throughput_per_s"] = output_tokens / duration_s
    out["total_token_throughput_per_s"] = (input_tokens + output_tokens) / duration_s
    out["output_token_throughput_per_gpu_per_s"] = output_tokens / duration_s / gpu_count

    good = int(_meets(metrics, slo).sum())
    out["goodput_per_s"] = good / duration_s
    out["slo_attainment"] = good / out["requests"] if out["requests"] else float("nan")
    out["slo_percentile"] = float(slo.get("percentile", 90)) if slo else float("nan")

    out["preemptions_total"] = int(metrics["preemptions"].sum())
    out["cached_tokens_total"] = int(done["cached_tokens"].sum())
    out["prefix_cache_hit_rate"] = float(done["cached_tokens"].sum()) / input_tokens if input_tokens else float("nan")

    cluster_usd = price_usd_per_hour * duration_s / 3600.0
    out.update(duration_s=float(duration_s), gpu_count=int(gpu_count), price_usd_per_hour=float(price_usd_per_hour),
               cluster_usd=cluster_usd)
    out["usd_per_million_output_tokens"] = cluster_usd / (output_tokens / 1e6) if output_tokens else float("nan")
    out["usd_per_million_tokens"] = (cluster_usd / ((input_tokens + output_tokens) / 1e6)
                                     if input_tokens + output_tokens else float("nan"))

    out.update({key: float("nan") for key in ITERATION_STATS})
    for key, value in (iteration_stats or {}).items():
        if key in out and key not in ITERATION_STATS:
            raise MetricsError(f"iteration_stats: key {key!r} would overwrite a computed metric; rename it")
        out[key] = value
    out["slo_met"] = slo_met(out, slo) if slo else True
    return out


def slo_met(summary: dict, slo: dict) -> bool:
    """True when every latency target of `slo` holds at its percentile (default 90) in `summary`.

    >>> slo_met({"ttft_s_p90": 0.4, "tpot_s_p90": 0.06}, {"ttft_s": 0.5, "tpot_s": 0.05})
    False
    """
    slo = _check_slo(slo)
    q = _pkey(float(slo.get("percentile", 90)))
    for key in LATENCIES:
        if slo.get(key) is None:
            continue
        name = f"{key}_{q}"
        if name not in summary:
            raise MetricsError(f"summary: missing key {name!r}; expected summarize() to be called with this slo")
        value = summary[name]
        if key == "tpot_s" and np.isnan(value) and summary.get("completed", 0) > 0:
            continue  # every finished request had one output token, so no TPOT to miss
        if not value <= slo[key]:
            return False
    return True
