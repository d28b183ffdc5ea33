"""Synthetic request streams: Poisson, bursty Gamma and diurnal arrivals with chosen length laws.

Every generator takes an explicit seed; the same seed gives identical arrays. Arrival times and
lengths come from separate child streams of that seed, so changing a length law leaves the
arrival times unchanged.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from simcluster.workload.readers import read_trace
from simcluster.workload.lengths import Empirical, Fixed, Lengths, Lognormal, TraceLengths, Uniform, Zipf
from simcluster.workload.trace import Trace, TraceError


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(arrival stream, length stream), independent children of `seed`."""
    arrival_rng, length_rng = np.random.default_rng(seed).spawn(2)
    return arrival_rng, length_rng


def _check(kind: str, **values: float) -> None:
    for key, value in values.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise TraceError(f"{kind}: {key} {value!r}; expected a positive number")


def _lengths(lengths) -> Lengths | TraceLengths:
    """Accept a Lengths/TraceLengths or a (prompt, output) pair of distributions."""
    if isinstance(lengths, tuple) and len(lengths) == 2:
        return Lengths(*lengths)
    if not isinstance(lengths, (Lengths, TraceLengths)):
        raise TraceError(f"lengths {lengths!r}; expected Lengths(prompt, output), TraceLengths(trace) "
                         "or a (prompt, output) pair of distributions")
    return lengths


def _trace(name: str, arrival_s: np.ndarray, lengths, length_rng, source: str) -> Trace:
    prompt, output = _lengths(lengths).sample(len(arrival_s), length_rng)
    return Trace(name=name, arrival_s=arrival_s, prompt_tokens=prompt, output_tokens=output, source=source)


def poisson(rate_per_s: float, n: int, lengths, seed: int) -> Trace:
    """n requests of a Poisson process: exponential inter-arrival gaps of mean 1 / rate_per_s.

    >>> t = poisson(5.0, 1000, (Fixed(512), Fixed(128)), seed=0)
    >>> len(t), int(t.prompt_tokens[0])
    (1000, 512)
    """
    _check("poisson", rate_per_s=rate_per_s, n=n)
    arrival_rng, length_rng = _streams(seed)
    arrival_s = np.cumsum(arrival_rng.exponential(1.0 / rate_per_s, size=int(n)))
    return _trace(f"poisson-{rate_per_s:g}/s", arrival_s, lengths, length_rng,
                  f"synthetic: poisson rate_per_s={rate_per_s:g} n={n} seed={seed}")


def gamma_shape_scale(rate_per_s: float, cv: float) -> tuple[float, float]:
    """Gamma gap parameters for a mean gap 1/rate and coefficient of variation cv.

    A Gamma(k, theta) gap has mean k*theta and cv 1/sqrt(k), so k = 1/cv^2 and
    theta = 1/(rate*k); cv = 1 is Poisson, cv > 1 is burstier (BurstGPT fits cv > 1).
    """
    shape = 1.0 / cv**2
    return shape, 1.0 / (rate_per_s * shape)


def gamma(rate_per_s: float, cv: float, n: int, lengths, seed: int) -> Trace:
    """n requests with Gamma inter-arrival gaps: mean rate `rate_per_s`, burstiness `cv`."""
    _check("gamma", rate_per_s=rate_per_s, cv=cv, n=n)
    arrival_rng, length_rng = _streams(seed)
    shape, scale = gamma_shape_scale(rate_per_s, cv)
    arrival_s = np.cumsum(arrival_rng.gamma(shape, scale, size=int(n)))
    return _trace(f"gamma-{rate_per_s:g}/s-cv{cv:g}", arrival_s, lengths, length_rng,
                  f"synthetic: gamma rate_per_s={rate_per_s:g} cv={cv:g} n={n} seed={seed}")


def diurnal_rate_per_s(time_s, mean_rate_per_s: float, peak_to_trough: float, period_s: float):
    """Rate of the diurnal process at `time_s`: a cosine with its trough at t = 0 and peak at period/2.

    rate(t) = mean * (1 - A cos(2 pi t / period)) with A = (r - 1) / (r + 1), so that
    rate_max / rate_min = (1 + A) / (1 - A) = r and the mean over a period is `mean`.
    """
    amplitude = (peak_to_trough - 1.0) / (peak_to_trough + 1.0)
    return mean_rate_per_s * (1.0 - amplitude * np.cos(2.0 * np.pi * np.asarray(time_s) / period_s))


def diurnal(mean_rate_per_s: float, peak_to_trough: float, period_s: float, n: int, lengths, seed: int) -> Trace:
    """n requests of a non-homogeneous Poisson process with a daily-like cosine rate.

    Drawn by thinning (Lewis and Shedler, 1979): candidates at the peak rate, each kept with
    probability rate(t) / peak rate.
    """
    _check("diurnal", mean_rate_per_s=mean_rate_per_s, peak_to_trough=peak_to_trough, period_s=period_s, n=n)
    if peak_to_trough < 1:
        raise TraceError(f"diurnal: peak_to_trough {peak_to_trough}; expected a ratio >= 1")
    arrival_rng, length_rng = _streams(seed)
    peak_rate = float(diurnal_rate_per_s(period_s / 2, mean_rate_per_s, peak_to_trough, period_s))
    kept, now_s, need = [], 0.0, int(n)
    while need > 0:
        # Expected acceptance is mean/peak >= 1/2; drawing ~1.25x the expected need keeps loops few.
        count = int(need * peak_rate / mean_rate_per_s * 1.25) + 16
        candidates = now_s + np.cumsum(arrival_rng.exponential(1.0 / peak_rate, size=count))
        keep = arrival_rng.random(count) * peak_rate < diurnal_rate_per_s(
            candidates, mean_rate_per_s, peak_to_trough, period_s)
        accepted = candidates[keep][:need]
        kept.append(accepted)
        need -= len(accepted)
        now_s = float(candidates[-1])
    arrival_s = np.concatenate(kept)
    return _trace(f"diurnal-{mean_rate_per_s:g}/s-x{peak_to_trough:g}", arrival_s, lengths, length_rng,
                  f"synthetic: diurnal mean_rate_per_s={mean_rate_per_s:g} peak_to_trough={peak_to_trough:g} "
                  f"period_s={period_s:g} n={n} seed={seed}")


# Arrival laws generate() knows: name -> (generator, its own spec keys in argument order). In a
# spec `rate_per_s` is the mean rate of every law (diurnal's mean_rate_per_s). A new law is one
# function above plus one entry here.
ARRIVALS = {
    "poisson": (poisson, ("rate_per_s",)),
    "gamma": (gamma, ("rate_per_s", "cv")),
    "diurnal": (diurnal, ("rate_per_s", "peak_to_trough", "period_s")),
}

# Length laws a spec can name: dist -> (required keys, optional keys).
DISTS = {
    "fixed": (("value",), ()),
    "uniform": (("min", "max"), ()),
    "lognormal": ((), ("mu", "mean", "sigma", "p50", "min", "max")),
    "zipf": (("a",), ("min", "max")),
    "empirical": (("path",), ("format", "column")),
}


def _keys(spec: dict, where: str, required: tuple, optional: tuple) -> None:
    """Raise naming the first unknown or missing key of `spec`."""
    if not isinstance(spec, dict):
        raise TraceError(f"workload spec: {where} is {spec!r}; expected a mapping")
    allowed = set(required) | set(optional)
    for key in spec:
        if key not in allowed:
            raise TraceError(f"workload spec: unknown key '{where}.{key}'; expected one of {sorted(allowed)}")
    for key in required:
        if key not in spec:
            raise TraceError(f"workload spec: missing key '{where}.{key}'")


def length_dist(spec: dict, where: str, base_dir: str | Path | None = None):
    """A length distribution from a dict such as {"dist": "lognormal", "mean": 1000, "sigma": 1.0}.

    lognormal takes mu+sigma, mean+sigma or mean+p50 (min/max clip it); empirical resamples the
    column named `where` (or `column`) of the trace file at `path` (relative to `base_dir`).
    """
    if not isinstance(spec, dict) or spec.get("dist") not in DISTS:
        got = spec.get("dist") if isinstance(spec, dict) else spec
        raise TraceError(f"workload spec: '{where}.dist' is {got!r}; expected one of {sorted(DISTS)}")
    required, optional = DISTS[spec["dist"]]
    # None means "not given", as a validated schema writes unset optional keys.
    body = {k: v for k, v in spec.items() if k != "dist" and v is not None}
    _keys(body, where, required, optional)
    dist = spec["dist"]
    if dist == "fixed":
        return Fixed(body["value"])
    if dist == "uniform":
        return Uniform(body["min"], body["max"])
    if dist == "zipf":
        return Zipf(body["a"], body.get("min", 1), body.get("max", 8192))
    if dist == "empirical":
        path = Path(body["path"])
        if base_dir is not None and not path.is_absolute():
            path = Path(base_dir) / path
        trace = read_trace(path, body.get("format", "auto"))
        return Empirical.from_trace(trace, body.get("column", where))
    bounds = {"min": body.get("min", 1), "max": body.get("max", 1 << 20)}
    given = tuple(k for k in ("mu", "mean", "sigma", "p50") if k in body)
    if given == ("mu", "sigma"):
        return Lognormal(body["mu"], body["sigma"], **bounds)
    if given == ("mean", "sigma"):
        return Lognormal.from_mean_sigma(body["mean"], body["sigma"], **bounds)
    if given == ("mean", "p50"):
        return Lognormal.from_mean_p50(body["mean"], body["p50"], **bounds)
    raise TraceError(f"workload spec: '{where}' lognormal has keys {list(given)}; expected mu+sigma, "
                     "mean+sigma or mean+p50")


def generate(spec: dict, seed: int, base_dir: str | Path | None = None) -> Trace:
    """A synthetic Trace from a plain dict, as a scenario file writes it.

    Keys: arrival ('poisson' | 'gamma' | 'diurnal'), rate_per_s (the mean rate), n_requests,
    prompt_tokens and output_tokens (length dicts, see length_dist), cv (gamma),
    peak_to_trough and period_s (diurnal), name (optional). Keys set to None count as absent;
    any other key raises TraceError naming it.

    >>> t = generate({"arrival": "poisson", "rate_per_s": 5, "n_requests": 1000,
    ...               "prompt_tokens": {"dist": "lognormal", "mean": 1000, "sigma": 1.0, "min": 16, "max": 8192},
    ...               "output_tokens": {"dist": "fixed", "value": 128}}, seed=0)
    >>> len(t), int(t.output_tokens.max())
    (1000, 128)
    """
    if not isinstance(spec, dict) or spec.get("arrival") not in ARRIVALS:
        got = spec.get("arrival") if isinstance(spec, dict) else spec
        raise TraceError(f"workload spec: 'arrival' is {got!r}; expected one of {sorted(ARRIVALS)}")
    function, own = ARRIVALS[spec["arrival"]]
    common = ("n_requests", "prompt_tokens", "output_tokens")
    body = {k: v for k, v in spec.items() if k not in ("arrival", "name") and v is not None}
    _keys(body, "workload", common + own, ())
    lengths = Lengths(length_dist(body["prompt_tokens"], "prompt_tokens", base_dir),
                      length_dist(body["output_tokens"], "output_tokens", base_dir))
    n = body["n_requests"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise TraceError(f"workload spec: 'workload.n_requests' is {n!r}; expected a positive integer")
    trace = function(*(body[k] for k in own), n, lengths, seed)
    if spec.get("name") is not None:
        return Trace(str(spec["name"]), trace.arrival_s, trace.prompt_tokens, trace.output_tokens,
                     source=trace.source)
    return trace
