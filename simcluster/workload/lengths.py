"""Token-length distributions for synthetic requests; each samples int64 arrays of lengths >= 1.

A distribution is a small frozen class with `sample(n, rng) -> np.ndarray[int64]`. `Lengths`
pairs one for prompts with one for outputs; `TraceLengths` resamples (prompt, output) pairs of a
real trace together, which keeps their correlation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simcluster.workload.trace import Trace, TraceError


def _check_bounds(kind: str, low: int, high: int) -> None:
    if low < 1 or high < low:
        raise TraceError(f"{kind}: min {low}, max {high}; expected 1 <= min <= max tokens")


@dataclass(frozen=True)
class Fixed:
    """Every request has `value` tokens."""

    value: int

    def __post_init__(self) -> None:
        if int(self.value) != self.value or self.value < 1:
            raise TraceError(f"fixed: value {self.value!r}; expected a positive whole number of tokens")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.full(n, int(self.value), dtype=np.int64)


@dataclass(frozen=True)
class Uniform:
    """Whole numbers of tokens drawn uniformly from [min, max], both ends included."""

    min: int
    max: int

    def __post_init__(self) -> None:
        _check_bounds("uniform", self.min, self.max)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(self.min, self.max, size=n, endpoint=True, dtype=np.int64)


@dataclass(frozen=True)
class Lognormal:
    """exp(Normal(mu, sigma)) rounded to whole tokens and clipped to [min, max].

    Prompt and output lengths of chat traces are close to lognormal (e.g. the Azure 2023 and
    BurstGPT traces). Build it from mu/sigma, from (mean, sigma) or from (mean, p50); the
    moments hold before clipping.
    """

    mu: float
    sigma: float
    min: int = 1
    max: int = 1 << 20

    def __post_init__(self) -> None:
        if not math.isfinite(self.mu) or not math.isfinite(self.sigma) or self.sigma < 0:
            raise TraceError(f"lognormal: mu {self.mu}, sigma {self.sigma}; expected finite mu and sigma >= 0")
        _check_bounds("lognormal", self.min, self.max)

    @classmethod
    def from_mean_sigma(cls, mean: float, sigma: float, min: int = 1, max: int = 1 << 20) -> Lognormal:
        """Lognormal with this mean: E[X] = exp(mu + sigma^2 / 2), so mu = ln(mean) - sigma^2 / 2."""
        if mean <= 0:
            raise TraceError(f"lognormal: mean {mean}; expected a positive number of tokens")
        return cls(math.log(mean) - sigma**2 / 2, sigma, min, max)

    @classmethod
    def from_mean_p50(cls, mean: float, p50: float, min: int = 1, max: int = 1 << 20) -> Lognormal:
        """Lognormal with this mean and median: p50 = exp(mu), mean / p50 = exp(sigma^2 / 2)."""
        if p50 <= 0 or mean < p50:
            raise TraceError(f"lognormal: mean {mean}, p50 {p50}; expected 0 < p50 <= mean "
                             "(a lognormal's mean is never below its median)")
        return cls(math.log(p50), math.sqrt(2 * math.log(mean / p50)), min, max)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        values = np.rint(rng.lognormal(self.mu, self.sigma, size=n))
        return np.clip(values, self.min, self.max).astype(np.int64)


@dataclass(frozen=True)
class Zipf:
    """Whole numbers in [min, max] with P(k) proportional to k^-a: many short, a long tail."""

    a: float
    min: int = 1
    max: int = 8192

    def __post_init__(self) -> None:
        if not math.isfinite(self.a) or self.a <= 0:
            raise TraceError(f"zipf: a {self.a}; expected a positive exponent")
        _check_bounds("zipf", self.min, self.max)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        support = np.arange(self.min, self.max + 1, dtype=np.float64)
        cdf = np.cumsum(support ** -self.a)
        # Inverse-CDF sampling over the bounded support (numpy's zipf has no upper bound).
        index = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
        return (self.min + np.minimum(index, len(support) - 1)).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Empirical:
    """Lengths resampled, with replacement, from observed values (e.g. a trace column)."""

    values: np.ndarray

    def __post_init__(self) -> None:
        values = np.asarray(self.values)
        if values.ndim != 1 or len(values) == 0 or (values < 1).any():
            raise TraceError("empirical: values; expected a non-empty list of positive token counts")
        object.__setattr__(self, "values", values.astype(np.int64))

    @classmethod
    def from_trace(cls, trace: Trace, column: str) -> Empirical:
        """Resample one column ('prompt_tokens' or 'output_tokens') of a trace."""
        if column not in ("prompt_tokens", "output_tokens"):
            raise TraceError(f"empirical: column {column!r}; expected 'prompt_tokens' or 'output_tokens'")
        return cls(np.array(getattr(trace, column)))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.values[rng.integers(0, len(self.values), size=n)]


@dataclass(frozen=True)
class Lengths:
    """Independent prompt and output length distributions."""

    prompt: Fixed | Uniform | Lognormal | Zipf | Empirical
    output: Fixed | Uniform | Lognormal | Zipf | Empirical

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(prompt_tokens, output_tokens), each from its own child stream of `rng`."""
        prompt_rng, output_rng = rng.spawn(2)
        return self.prompt.sample(n, prompt_rng), self.output.sample(n, output_rng)


@dataclass(frozen=True, eq=False)
class TraceLengths:
    """(prompt, output) pairs resampled together from the rows of a trace."""

    trace: Trace

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        rows = rng.integers(0, len(self.trace), size=n)
        return np.array(self.trace.prompt_tokens[rows]), np.array(self.trace.output_tokens[rows])
