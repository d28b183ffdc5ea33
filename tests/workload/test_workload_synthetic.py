"""Synthetic arrivals against their theory, length laws, determinism and generate() specs."""

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from simcluster.workload import (Empirical, Fixed, Lengths, Lognormal, TraceError, TraceLengths, Uniform, Zipf,
                                 diurnal, gamma, generate, poisson, read_trace)
from simcluster.workload.synthetic import diurnal_rate_per_s, gamma_shape_scale

TRACES = Path(__file__).resolve().parents[2] / "scenarios" / "traces"
ONES = (Fixed(1), Fixed(1))


def gaps_of(trace):
    return np.diff(np.concatenate([[0.0], trace.arrival_s]))


@pytest.mark.parametrize("rate_per_s, seed", [(5.0, 0), (0.2, 1), (300.0, 2)])
def test_poisson_rate_and_exponential_gaps(rate_per_s, seed):
    t = poisson(rate_per_s, 20_000, ONES, seed)
    assert len(t) == 20_000
    assert t.rate_per_s == pytest.approx(rate_per_s, rel=0.03)
    gaps = gaps_of(t)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)
    # Kolmogorov-Smirnov against Exp(rate): the gaps are exponential, not just right on average.
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate_per_s)).pvalue > 1e-3


@pytest.mark.parametrize("cv, seed", [(0.5, 0), (2.0, 1), (3.0, 2)])
def test_gamma_rate_and_cv(cv, seed):
    t = gamma(4.0, cv, 20_000, ONES, seed)
    gaps = gaps_of(t)
    assert gaps.mean() == pytest.approx(1 / 4.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.05)


def test_gamma_parameters_closed_form():
    shape, scale = gamma_shape_scale(rate_per_s=2.0, cv=0.5)
    assert shape == pytest.approx(4.0) and scale == pytest.approx(0.125)
    assert shape * scale == pytest.approx(0.5)  # mean gap = 1 / rate
    assert 1 / np.sqrt(shape) == pytest.approx(0.5)


def test_diurnal_rate_curve():
    t = np.array([0.0, 25.0, 50.0, 75.0, 100.0])
    r = diurnal_rate_per_s(t, mean_rate_per_s=10.0, peak_to_trough=4.0, period_s=100.0)
    np.testing.assert_allclose(r, [4.0, 10.0, 16.0, 10.0, 4.0])
    grid = np.linspace(0, 100, 100_001)
    assert np.trapezoid(diurnal_rate_per_s(grid, 10.0, 4.0, 100.0), grid) / 100 == pytest.approx(10.0)


def test_diurnal_follows_its_rate():
    period_s, mean, ratio = 1000.0, 10.0, 4.0
    t = diurnal(mean, ratio, period_s, 60_000, ONES, seed=5)
    whole = np.floor(t.arrival_s[-1] / period_s) * period_s
    arrivals = t.arrival_s[t.arrival_s < whole]
    periods = whole / period_s
    assert len(arrivals) / whole == pytest.approx(mean, rel=0.03)
    # Counts in 20 phase bins against the integral of the rate over each bin.
    edges = np.linspace(0, period_s, 21)
    counts, _ = np.histogram(arrivals % period_s, edges)
    fine = np.linspace(0, period_s, 200_001)
    rate = diurnal_rate_per_s(fine, mean, ratio, period_s)
    expect = np.array([np.trapezoid(rate[(fine >= a) & (fine <= b)], fine[(fine >= a) & (fine <= b)])
                       for a, b in zip(edges[:-1], edges[1:])]) * periods
    chi2 = ((counts - expect) ** 2 / expect).sum()
    assert stats.chi2.sf(chi2, df=19) > 1e-3
    # Peak over trough, bins of width period/20 around each, vs the same bins of the rate curve.
    peak = counts[9:11].sum()
    trough = counts[[0, 19]].sum()
    assert peak / trough == pytest.approx(expect[9:11].sum() / expect[[0, 19]].sum(), rel=0.1)
    assert peak / trough > 0.85 * ratio


@pytest.mark.parametrize("make", [
    lambda seed, lengths: poisson(3.0, 500, lengths, seed),
    lambda seed, lengths: gamma(3.0, 2.0, 500, lengths, seed),
    lambda seed, lengths: diurnal(3.0, 2.0, 60.0, 500, lengths, seed),
])
def test_same_seed_same_arrays(make):
    lengths = Lengths(Lognormal.from_mean_sigma(800, 1.0, 16, 8192), Uniform(1, 300))
    a, b, c = make(7, lengths), make(7, lengths), make(8, lengths)
    for name in ("arrival_s", "prompt_tokens", "output_tokens"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        assert not np.array_equal(getattr(a, name), getattr(c, name))
    # Arrivals and lengths use separate streams: another length law keeps the arrival times.
    other = make(7, (Fixed(5), Zipf(1.2, 1, 100)))
    np.testing.assert_array_equal(other.arrival_s, a.arrival_s)


def test_bad_generator_arguments():
    with pytest.raises(TraceError, match="poisson: rate_per_s"):
        poisson(0.0, 10, ONES, 0)
    with pytest.raises(TraceError, match="gamma: cv"):
        gamma(1.0, -1.0, 10, ONES, 0)
    with pytest.raises(TraceError, match="peak_to_trough 0.5"):
        diurnal(1.0, 0.5, 10.0, 10, ONES, 0)
    with pytest.raises(TraceError, match="expected Lengths"):
        poisson(1.0, 10, Fixed(3), 0)


def test_generate_from_the_scenario_dict():
    spec = {"arrival": "poisson", "rate_per_s": 5, "n_requests": 1000,
            "prompt_tokens": {"dist": "lognormal", "mean": 1000, "sigma": 1.0, "min": 16, "max": 8192},
            "output_tokens": {"dist": "fixed", "value": 128}}
    t = generate(spec, seed=3)
    assert len(t) == 1000 and set(t.output_tokens.tolist()) == {128}
    assert t.prompt_tokens.min() >= 16 and t.prompt_tokens.max() <= 8192
    direct = poisson(5, 1000, (Lognormal.from_mean_sigma(1000, 1.0, 16, 8192), Fixed(128)), 3)
    np.testing.assert_array_equal(t.arrival_s, direct.arrival_s)
    np.testing.assert_array_equal(t.prompt_tokens, direct.prompt_tokens)
    again = generate(spec, seed=3)
    np.testing.assert_array_equal(t.prompt_tokens, again.prompt_tokens)


def test_generate_every_arrival_law_and_none_keys():
    lengths = {"prompt_tokens": {"dist": "uniform", "min": 10, "max": 20, "value": None},
               "output_tokens": {"dist": "zipf", "a": 1.5, "min": 1, "max": 50}}
    g = generate({"arrival": "gamma", "rate_per_s": 2.0, "cv": 3.0, "n_requests": 50, **lengths}, 1)
    np.testing.assert_array_equal(g.arrival_s, gamma(2.0, 3.0, 50, (Uniform(10, 20), Zipf(1.5, 1, 50)), 1).arrival_s)
    d = generate({"arrival": "diurnal", "rate_per_s": 2.0, "peak_to_trough": 3.0, "period_s": 60.0,
                  "cv": None, "n_requests": 50, "name": "day", **lengths}, 1)
    assert d.name == "day" and len(d) == 50


def test_generate_empirical_from_a_trace_file():
    spec = {"arrival": "poisson", "rate_per_s": 1.0, "n_requests": 300,
            "prompt_tokens": {"dist": "empirical", "path": "azure_llm_2023_code.csv"},
            "output_tokens": {"dist": "empirical", "path": "azure_llm_2023_code.csv", "format": "azure"}}
    t = generate(spec, seed=0, base_dir=TRACES)
    source = read_trace(TRACES / "azure_llm_2023_code.csv")
    assert set(t.prompt_tokens.tolist()) <= set(source.prompt_tokens.tolist())
    assert set(t.output_tokens.tolist()) <= set(source.output_tokens.tolist())


@pytest.mark.parametrize("spec, words", [
    ({"arrival": "uniform"}, "'arrival' is 'uniform'"),
    ({"arrival": "poisson", "rate_per_s": 1, "n_requests": 5, "burst": 2,
      "prompt_tokens": {"dist": "fixed", "value": 1}, "output_tokens": {"dist": "fixed", "value": 1}},
     "unknown key 'workload.burst'"),
    ({"arrival": "poisson", "rate_per_s": 1, "n_requests": 5,
      "prompt_tokens": {"dist": "fixed", "value": 1}}, "missing key 'workload.output_tokens'"),
    ({"arrival": "poisson", "rate_per_s": 1, "n_requests": 5,
      "prompt_tokens": {"dist": "fixed", "value": 1, "mean": 3}, "output_tokens": {"dist": "fixed", "value": 1}},
     "unknown key 'prompt_tokens.mean'"),
    ({"arrival": "poisson", "rate_per_s": 1, "n_requests": 5,
      "prompt_tokens": {"dist": "pareto"}, "output_tokens": {"dist": "fixed", "value": 1}},
     "'prompt_tokens.dist' is 'pareto'"),
    ({"arrival": "poisson", "rate_per_s": 1, "n_requests": 5,
      "prompt_tokens": {"dist": "lognormal", "mean": 100}, "output_tokens": {"dist": "fixed", "value": 1}},
     "expected mu+sigma, mean+sigma or mean+p50"),
    ({"arrival": "poisson", "rate_per_s": 1, "n_requests": 2.5,
      "prompt_tokens": {"dist": "fixed", "value": 1}, "output_tokens": {"dist": "fixed", "value": 1}},
     "n_requests' is 2.5"),
])
def test_generate_names_the_bad_key(spec, words):
    with pytest.raises(TraceError) as err:
        generate(spec, 0)
    assert words in str(err.value)


# --- length laws ------------------------------------------------------------------------

def rng(seed=0):
    return np.random.default_rng(seed)


def test_fixed_and_uniform():
    assert Fixed(7).sample(4, rng()).tolist() == [7, 7, 7, 7]
    u = Uniform(3, 6).sample(40_000, rng())
    assert u.dtype == np.int64 and set(u.tolist()) == {3, 4, 5, 6}
    assert u.mean() == pytest.approx(4.5, rel=0.01)
    for bad in (lambda: Fixed(0), lambda: Uniform(5, 4), lambda: Uniform(0, 4)):
        with pytest.raises(TraceError):
            bad()


def test_lognormal_fits():
    x = Lognormal.from_mean_sigma(1000, 0.5).sample(200_000, rng(1))
    assert x.mean() == pytest.approx(1000, rel=0.01)
    y = Lognormal.from_mean_p50(1000, 600).sample(200_000, rng(2))
    assert np.median(y) == pytest.approx(600, rel=0.01)
    assert y.mean() == pytest.approx(1000, rel=0.03)
    z = Lognormal(mu=np.log(500), sigma=2.0, min=16, max=2048).sample(50_000, rng(3))
    assert z.min() == 16 and z.max() == 2048
    with pytest.raises(TraceError, match="p50"):
        Lognormal.from_mean_p50(100, 200)


def test_zipf_power_law():
    z = Zipf(a=1.0, min=1, max=1000).sample(400_000, rng(4))
    assert z.min() >= 1 and z.max() <= 1000
    counts = np.bincount(z, minlength=1001)
    # P(k) / P(2k) = 2^a = 2 for a = 1.
    assert counts[1] / counts[2] == pytest.approx(2.0, rel=0.03)
    assert counts[2] / counts[4] == pytest.approx(2.0, rel=0.05)


def test_empirical_and_trace_lengths():
    trace = read_trace(TRACES / "azure_llm_2023_conv.csv")
    e = Empirical.from_trace(trace, "output_tokens").sample(10_000, rng(5))
    assert set(e.tolist()) <= set(trace.output_tokens.tolist())
    assert e.mean() == pytest.approx(trace.output_tokens.mean(), rel=0.05)
    prompt, output = TraceLengths(trace).sample(5000, rng(6))
    pairs = set(zip(trace.prompt_tokens.tolist(), trace.output_tokens.tolist()))
    assert set(zip(prompt.tolist(), output.tolist())) <= pairs
    with pytest.raises(TraceError, match="column 'arrival_s'"):
        Empirical.from_trace(trace, "arrival_s")
