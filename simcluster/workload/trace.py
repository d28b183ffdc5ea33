"""Trace: the requests a serving simulation replays (arrival time, prompt and output lengths)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


class TraceError(ValueError):
    """A trace that cannot be used: bad file, bad row, bad column, or a bad generator spec."""


def _where(source: str, name: str) -> str:
    """The leading words of an error message: the file if the trace came from one."""
    return source if source else f"trace {name!r}"


def _frozen(values: np.ndarray) -> np.ndarray:
    """A read-only view, so a Trace cannot be changed behind the simulator's back."""
    view = values.view()
    view.setflags(write=False)
    return view


def _hash_row(ids) -> np.ndarray:
    """One request's block ids as a read-only int64 array (kept as is when it already is one)."""
    if isinstance(ids, np.ndarray) and ids.dtype == np.int64 and not ids.flags.writeable and ids.ndim == 1:
        return ids
    return _frozen(np.asarray(ids, dtype=np.int64).reshape(-1))


def _tokens(values, column: str, n: int, where: str) -> np.ndarray:
    """Token counts as int64 after checking every row holds a positive whole number."""
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) != n:
        raise TraceError(f"{where}: column {column!r} has {len(np.atleast_1d(arr))} rows; "
                         f"expected {n} like arrival_s")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.argmax(bad))
            raise TraceError(f"{where}: row {i} column {column!r} is {arr[i]!r}; "
                             "expected a positive whole number of tokens")
    elif arr.dtype.kind not in "iu":
        raise TraceError(f"{where}: column {column!r} has dtype {arr.dtype}; expected integers")
    arr = arr.astype(np.int64)
    bad = arr <= 0
    if bad.any():
        i = int(np.argmax(bad))
        raise TraceError(f"{where}: row {i} column {column!r} is {arr[i]}; "
                         "expected a positive number of tokens")
    return arr


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests in arrival order; one row per request, SI units (seconds, tokens).

    `hash_ids[i]` (optional) lists the ids of the `block_tokens`-token blocks of request i's
    prompt; two requests with the same leading ids share that prompt prefix (Mooncake traces use
    512-token blocks). `source` says where the rows came from (a file path, or a generator).

    >>> t = Trace("demo", np.array([0.0, 0.5, 2.0]), np.array([100, 200, 300]), np.array([10, 20, 30]))
    >>> len(t), t.duration_s, t.rate_per_s
    (3, 2.0, 1.0)
    """

    name: str
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    hash_ids: tuple[np.ndarray, ...] | None = None
    block_tokens: int = 512
    source: str = field(default="")

    def __post_init__(self) -> None:
        where = _where(self.source, self.name)
        arrival = np.asarray(self.arrival_s)
        if arrival.ndim != 1 or len(arrival) == 0:
            raise TraceError(f"{where}: the trace is empty; expected at least one request")
        if arrival.dtype.kind not in "iuf":
            raise TraceError(f"{where}: column 'arrival_s' has dtype {arrival.dtype}; expected seconds")
        arrival = arrival.astype(np.float64)
        n = len(arrival)
        bad = ~np.isfinite(arrival)
        if bad.any():
            i = int(np.argmax(bad))
            raise TraceError(f"{where}: row {i} column 'arrival_s' is {arrival[i]}; expected a finite time in s")
        if arrival[0] < 0:
            raise TraceError(f"{where}: row 0 column 'arrival_s' is {arrival[0]}; expected a time >= 0 s")
        down = np.diff(arrival) < 0
        if down.any():
            i = int(np.argmax(down)) + 1
            raise TraceError(f"{where}: row {i} column 'arrival_s' is {arrival[i]} < {arrival[i - 1]} "
                             "of the row before; expected arrivals sorted by time")
        prompt = _tokens(self.prompt_tokens, "prompt_tokens", n, where)
        output = _tokens(self.output_tokens, "output_tokens", n, where)
        if int(self.block_tokens) <= 0:
            raise TraceError(f"{where}: block_tokens is {self.block_tokens}; expected a positive number")
        hashes = self.hash_ids
        if hashes is not None:
            if len(hashes) != n:
                raise TraceError(f"{where}: column 'hash_ids' has {len(hashes)} rows; expected {n} like arrival_s")
            hashes = tuple(_hash_row(h) for h in hashes)
        object.__setattr__(self, "arrival_s", _frozen(arrival))
        object.__setattr__(self, "prompt_tokens", _frozen(prompt))
        object.__setattr__(self, "output_tokens", _frozen(output))
        object.__setattr__(self, "hash_ids", hashes)
        object.__setattr__(self, "block_tokens", int(self.block_tokens))

    def __len__(self) -> int:
        return len(self.arrival_s)

    def __repr__(self) -> str:
        return (f"Trace(name={self.name!r}, requests={len(self)}, duration_s={self.duration_s:.3f}, "
                f"hash_ids={'yes' if self.hash_ids is not None else 'no'}, source={self.source!r})")

    @property
    def duration_s(self) -> float:
        """Time from the first to the last arrival, s."""
        return float(self.arrival_s[-1] - self.arrival_s[0])

    @property
    def rate_per_s(self) -> float:
        """Mean arrival rate: the inverse of the mean inter-arrival time, (n - 1) / duration_s.

        n - 1 gaps span the duration, so this is the rate estimate that is unbiased in the gap
        mean; it is NaN for a single request and inf when all requests arrive at once.
        """
        if len(self) < 2:
            return float("nan")
        if self.duration_s == 0:
            return float("inf")
        return (len(self) - 1) / self.duration_s

    def _take(self, index, name: str, arrival_s: np.ndarray | None = None) -> Trace:
        hashes = None
        if self.hash_ids is not None:
            picked = np.arange(len(self))[index]
            hashes = tuple(self.hash_ids[i] for i in picked)
        return Trace(
            name=name,
            arrival_s=self.arrival_s[index] if arrival_s is None else arrival_s,
            prompt_tokens=self.prompt_tokens[index],
            output_tokens=self.output_tokens[index],
            hash_ids=hashes,
            block_tokens=self.block_tokens,
            source=self.source,
        )

    def head(self, n: int) -> Trace:
        """The first `n` requests."""
        if n < 1:
            raise TraceError(f"{_where(self.source, self.name)}: head({n}); expected n >= 1")
        return self._take(slice(0, n), self.name)

    def slice_time(self, start_s: float, end_s: float) -> Trace:
        """Requests arriving in [start_s, end_s), with times shifted so start_s becomes 0 s."""
        lo, hi = np.searchsorted(self.arrival_s, [start_s, end_s], side="left")
        if hi <= lo:
            raise TraceError(f"{_where(self.source, self.name)}: no request arrives in "
                             f"[{start_s}, {end_s}) s; expected a window inside "
                             f"[{self.arrival_s[0]}, {self.arrival_s[-1]}] s")
        shifted = self.arrival_s[lo:hi] - float(start_s)
        return self._take(slice(lo, hi), f"{self.name}[{start_s}:{end_s}s]", arrival_s=shifted)

    def rescale_rate(self, target_rate_per_s: float) -> Trace:
        """The same requests, in order, with every inter-arrival gap scaled to reach the target rate.

        Gaps are multiplied by rate_per_s / target_rate_per_s, keeping the first arrival, so the
        burstiness (coefficient of variation of the gaps) is unchanged.
        """
        where = _where(self.source, self.name)
        if not np.isfinite(target_rate_per_s) or target_rate_per_s <= 0:
            raise TraceError(f"{where}: target_rate_per_s is {target_rate_per_s}; expected a positive rate")
        if len(self) < 2 or self.duration_s == 0:
            raise TraceError(f"{where}: cannot rescale the rate of {len(self)} request(s) spanning "
                             f"{self.duration_s} s; expected at least two distinct arrival times")
        factor = self.rate_per_s / target_rate_per_s
        start = self.arrival_s[0]
        arrival = start + (self.arrival_s - start) * factor
        return self._take(slice(None), f"{self.name}@{target_rate_per_s:g}/s", arrival_s=arrival)

    def to_frame(self) -> pd.DataFrame:
        """One row per request: arrival_s, prompt_tokens, output_tokens (and hash_ids as lists)."""
        frame = pd.DataFrame({
            "arrival_s": np.array(self.arrival_s),
            "prompt_tokens": np.array(self.prompt_tokens),
            "output_tokens": np.array(self.output_tokens),
        })
        if self.hash_ids is not None:
            frame["hash_ids"] = [h.tolist() for h in self.hash_ids]
        return frame
