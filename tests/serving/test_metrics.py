"""Serving metrics on hand-built records whose answers are known in closed form."""

import numpy as np
import pandas as pd
import pytest

from simcluster.serving.metrics import (ITERATION_STATS, MetricsError, repeated_percentile, request_metrics, slo_met,
                                        summarize)


def records(arrival, first, finish, output, scheduled=None, prompt=None, cached=None, preemptions=None, **extra):
    n = len(arrival)
    frame = pd.DataFrame({
        "request_id": np.arange(n),
        "replica": ["r0"] * n,
        "arrival_s": np.asarray(arrival, dtype=float),
        "prompt_tokens": np.asarray(prompt if prompt is not None else [100] * n),
        "output_tokens": np.asarray(output),
        "cached_tokens": np.asarray(cached if cached is not None else [0] * n),
        "scheduled_s": np.asarray(scheduled if scheduled is not None else arrival, dtype=float),
        "first_token_s": np.asarray(first, dtype=float),
        "finish_s": np.asarray(finish, dtype=float),
        "preemptions": np.asarray(preemptions if preemptions is not None else [0] * n),
    })
    for key, value in extra.items():
        frame[key] = value
    return frame


def ladder(n=101, gap_s=0.02):
    """Request i arrives at i s, waits 0.1 + 0.001 i s, gets its first token 0.5 + 0.01 i s after
    arriving and then one token every gap_s; output_tokens = 1 + (i mod 5)."""
    i = np.arange(n)
    arrival = i.astype(float)
    output = 1 + i % 5
    first = arrival + 0.5 + 0.01 * i
    return records(arrival, first, first + (output - 1) * gap_s, output,
                   scheduled=arrival + 0.1 + 0.001 * i, prompt=200 + i, cached=i % 3)


def test_request_metrics_columns():
    m = request_metrics(ladder(6))
    np.testing.assert_allclose(m["ttft_s"], 0.5 + 0.01 * np.arange(6))
    np.testing.assert_allclose(m["queue_s"], 0.1 + 0.001 * np.arange(6))
    np.testing.assert_allclose(m["e2e_s"], m["ttft_s"] + (m["output_tokens"] - 1) * 0.02)
    # Request 0 and 5 emit a single token: no gap, so no TPOT.
    assert np.isnan(m["tpot_s"].iloc[0]) and np.isnan(m["tpot_s"].iloc[5])
    np.testing.assert_allclose(m["tpot_s"].iloc[1:5], 0.02)


def test_percentiles_of_an_arithmetic_ladder():
    n = 101
    s = summarize(ladder(n), duration_s=200.0)
    # For values a + b i, i = 0..n-1, the linear-method percentile q is a + b (n - 1) q / 100.
    for q in (50, 90, 99):
        assert s[f"ttft_s_p{q}"] == pytest.approx(0.5 + 0.01 * (n - 1) * q / 100)
        assert s[f"queue_s_p{q}"] == pytest.approx(0.1 + 0.001 * (n - 1) * q / 100)
    assert s["ttft_s_mean"] == pytest.approx(0.5 + 0.01 * (n - 1) / 2)
    assert s["tpot_s_mean"] == pytest.approx(0.02) and s["tpot_s_p99"] == pytest.approx(0.02)
    assert s["itl_s_mean"] == pytest.approx(0.02) and s["itl_s_p50"] == pytest.approx(0.02)
    assert s["completed"] == s["requests"] == n


def test_throughput_and_cost():
    n = 101
    frame = ladder(n)
    s = summarize(frame, duration_s=200.0, gpu_count=4, price_usd_per_hour=36.0)
    out_tokens = int((1 + np.arange(n) % 5).sum())
    in_tokens = int((200 + np.arange(n)).sum())
    assert s["request_throughput_per_s"] == pytest.approx(n / 200)
    assert s["output_token_throughput_per_s"] == pytest.approx(out_tokens / 200)
    assert s["input_token_throughput_per_s"] == pytest.approx(in_tokens / 200)
    assert s["total_token_throughput_per_s"] == pytest.approx((in_tokens + out_tokens) / 200)
    assert s["output_token_throughput_per_gpu_per_s"] == pytest.approx(out_tokens / 200 / 4)
    # 36 USD/h for 200 s is 2 USD.
    assert s["cluster_usd"] == pytest.approx(2.0)
    assert s["usd_per_million_output_tokens"] == pytest.approx(2.0 / out_tokens * 1e6)
    assert s["usd_per_million_tokens"] == pytest.approx(2.0 / (in_tokens + out_tokens) * 1e6)
    assert s["cached_tokens_total"] == int((np.arange(n) % 3).sum())
    assert s["prefix_cache_hit_rate"] == pytest.approx((np.arange(n) % 3).sum() / in_tokens)


def test_itl_weights_each_gap():
    # A: 11 tokens, 10 gaps of 0.01 s. B: 2 tokens, 1 gap of 0.1 s.
    frame = records([0.0, 0.0], [1.0, 1.0], [1.1, 1.1], [11, 2])
    s = summarize(frame, duration_s=2.0)
    assert s["tpot_s_mean"] == pytest.approx(0.055)          # per request
    assert s["itl_s_mean"] == pytest.approx(0.2 / 11)         # per gap: 0.2 s over 11 gaps
    assert s["itl_s_p50"] == pytest.approx(0.01)
    # 11 gaps sorted: ten of 0.01 then 0.1; p99 sits at index 9.9.
    assert s["itl_s_p99"] == pytest.approx(0.01 + 0.9 * 0.09)
    assert np.isnan(s["max_itl_s_p99"])  # no max_itl_s column


def test_max_itl_statistics():
    frame = records([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.1, 1.5, 1.0], [11, 6, 1], max_itl_s=[0.05, 0.3, 0.0])
    s = summarize(frame, duration_s=2.0)
    # The one-token request has no gap and is left out.
    assert s["max_itl_s_mean"] == pytest.approx(0.175)
    assert s["max_itl_s_p50"] == pytest.approx(0.175)
    assert s["max_itl_s_p90"] == pytest.approx(0.05 + 0.9 * 0.25)


@pytest.mark.parametrize("seed", range(5))
def test_repeated_percentile_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    values = rng.lognormal(0, 1, 40)
    counts = rng.integers(0, 30, 40)
    for q in (0, 1, 37.5, 50, 90, 99, 99.9, 100):
        assert repeated_percentile(values, counts, q) == pytest.approx(
            np.percentile(np.repeat(values, counts), q, method="linear"), rel=1e-12)
    assert np.isnan(repeated_percentile(values, np.zeros(40, dtype=int), 50))


def ttft_ladder(n_done=10, n_lost=0):
    """TTFT of request i (1-based) is 0.1 i s; TPOT 0.01 s; `n_lost` more requests never finish."""
    i = np.arange(1, n_done + n_lost + 1)
    first = np.where(i <= n_done, 0.1 * i, np.nan)
    finish = np.where(i <= n_done, first + 0.09, np.nan)
    return records(np.zeros(len(i)), first, finish, [10] * len(i))


def test_goodput_and_attainment():
    slo = {"ttft_s": 0.5, "tpot_s": 0.05, "e2e_s": None, "percentile": 90}
    s = summarize(ttft_ladder(), duration_s=5.0, slo=slo)
    assert s["goodput_per_s"] == pytest.approx(5 / 5.0)      # TTFT 0.1 .. 0.5 meet 0.5 s
    assert s["slo_attainment"] == pytest.approx(0.5)
    assert s["slo_percentile"] == 90 and s["slo_met"] is False
    tight = summarize(ttft_ladder(), duration_s=5.0, slo={"tpot_s": 0.005})
    assert tight["goodput_per_s"] == 0.0 and tight["slo_attainment"] == 0.0
    # Requests that never finished count as misses, and not in the latency statistics.
    lost = summarize(ttft_ladder(10, 10), duration_s=5.0, slo=slo)
    assert lost["requests"] == 20 and lost["completed"] == 10
    assert lost["slo_attainment"] == pytest.approx(0.25)
    assert lost["ttft_s_p50"] == pytest.approx(0.55)
    dropped = summarize(ttft_ladder(), duration_s=5.0, slo=slo, unfinished=10)
    assert dropped["slo_attainment"] == pytest.approx(0.25) and dropped["requests"] == 20


def test_one_token_outputs_meet_any_tpot_target():
    frame = records([0.0, 0.0], [0.1, 0.1], [0.1, 0.5], [1, 2])
    s = summarize(frame, duration_s=1.0, slo={"tpot_s": 0.1})
    assert s["goodput_per_s"] == pytest.approx(1.0)  # the 2-token one has TPOT 0.4 s
    only_one = summarize(records([0.0], [0.1], [0.1], [1]), 1.0, slo={"tpot_s": 0.1, "percentile": 99})
    assert np.isnan(only_one["tpot_s_p99"]) and only_one["slo_met"] is True


def test_slo_met_at_its_percentile():
    frame = ttft_ladder()
    # TTFT 0.1 .. 1.0 in steps of 0.1: p50 = 0.1 + 0.9 * 0.5 = 0.55, p40 = 0.1 + 0.9 * 0.4 = 0.46.
    s40 = summarize(frame, 5.0, slo={"ttft_s": 0.5, "percentile": 40})
    assert s40["ttft_s_p40"] == pytest.approx(0.46) and s40["slo_met"] is True
    assert slo_met(s40, {"ttft_s": 0.5, "percentile": 40}) is True
    assert slo_met(s40, {"ttft_s": 0.5, "percentile": 50}) is False
    assert slo_met(s40, {"ttft_s": 0.56, "percentile": 50}) is True
    assert slo_met(s40, {"ttft_s": 0.56, "tpot_s": 0.009, "percentile": 50}) is False
    assert slo_met(s40, {"e2e_s": None}) is True
    with pytest.raises(MetricsError, match="missing key 'ttft_s_p95'"):
        slo_met(s40, {"ttft_s": 0.5, "percentile": 95})


def test_iteration_stats_pass_through():
    s = summarize(ladder(5), 10.0, iteration_stats={"mfu": 0.31, "kv_cache_use_max": 0.9, "iterations": 812})
    assert s["mfu"] == 0.31 and s["kv_cache_use_max"] == 0.9 and s["iterations"] == 812
    assert np.isnan(s["mbu"]) and np.isnan(s["gpu_time_utilisation"])
    assert set(ITERATION_STATS) <= set(summarize(ladder(5), 10.0))
    with pytest.raises(MetricsError, match="iteration_stats: key 'completed'"):
        summarize(ladder(5), 10.0, iteration_stats={"completed": 3})


def test_preemptions_and_flat_values():
    frame = ladder(4)
    frame["preemptions"] = [0, 2, 1, 0]
    s = summarize(frame, 10.0, slo={"ttft_s": 1.0})
    assert s["preemptions_total"] == 3
    assert all(isinstance(v, (int, float, bool, np.floating)) for v in s.values())


@pytest.mark.parametrize("change, words", [
    (lambda f: f.drop(columns="first_token_s"), "missing column 'first_token_s'"),
    (lambda f: f.assign(output_tokens=[1, 0, 2, 3]), "request_id 1 column 'output_tokens'"),
    (lambda f: f.assign(first_token_s=f["arrival_s"] - 1), "request_id 0 column 'first_token_s' is -1.0 < scheduled_s"),
    (lambda f: f.assign(scheduled_s=f["arrival_s"] - 0.5), "request_id 0 column 'scheduled_s' is -0.5 < arrival_s"),
    (lambda f: f.assign(finish_s=f["first_token_s"] - 1), "column 'finish_s'"),
])
def test_bad_records(change, words):
    with pytest.raises(MetricsError, match=words):
        summarize(change(ladder(4)), 10.0)


@pytest.mark.parametrize("kwargs, words", [
    (dict(duration_s=0.0), "duration_s"),
    (dict(duration_s=1.0, slo={"ttft": 0.5}), "unknown key 'ttft'"),
    (dict(duration_s=1.0, slo={"ttft_s": -1}), "key 'ttft_s' is -1"),
    (dict(duration_s=1.0, slo={"percentile": 120}), "key 'percentile' is 120"),
    (dict(duration_s=1.0, gpu_count=0), "gpu_count"),
    (dict(duration_s=1.0, price_usd_per_hour=-2.0), "price_usd_per_hour"),
])
def test_bad_arguments(kwargs, words):
    with pytest.raises(MetricsError, match=words):
        summarize(ladder(4), **kwargs)
