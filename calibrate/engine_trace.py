"""The request trace an engine-validation run serves: lengths from a public trace, arrivals at a target rate.

Standard library and numpy only, so it runs on the GPU host (which has no simpy) and here alike.
The chosen rows are written out as `engine_trace_<rate>.csv` next to the measurements, and the
simulator replays exactly that file.
"""

from __future__ import annotations

import csv
import datetime
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TRACE_COLUMNS = ("request_id", "arrival_s", "prompt_tokens", "output_tokens")


@dataclass(frozen=True)
class EngineTrace:
    """Requests in arrival order; times in seconds from the run's start."""

    rate_per_s: float
    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_s)


def _azure_rows(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(timestamp_s, context_tokens, generated_tokens) of an Azure LLM inference trace 2023 CSV."""
    times, prompts, outputs = [], [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        for line, row in enumerate(reader, start=2):
            try:
                stamp = row["TIMESTAMP"].strip()
                # Azure writes 7 fractional digits; Python parses at most 6.
                head, _, frac = stamp.partition(".")
                t = datetime.datetime.strptime(head, "%Y-%m-%d %H:%M:%S").timestamp() + float("0." + (frac or "0"))
                times.append(t)
                prompts.append(int(row["ContextTokens"]))
                outputs.append(int(row["GeneratedTokens"]))
            except (KeyError, ValueError) as err:
                raise ValueError(f"{path}: row {line}: expected TIMESTAMP,ContextTokens,GeneratedTokens ({err})") from None
    t = np.asarray(times)
    return t - t[0], np.asarray(prompts, dtype=np.int64), np.asarray(outputs, dtype=np.int64)


def engine_trace(path: str | Path, rate_per_s: float, n: int, offset: int = 0, max_prompt: int = 2048,
                 max_output: int = 256) -> EngineTrace:
    """`n` consecutive requests of the Azure trace from row `offset`, lengths clipped to the limits,
    their real inter-arrival gaps rescaled so that the mean rate is `rate_per_s` (burstiness kept)."""
    t, prompt, output = _azure_rows(Path(path))
    if offset + n > len(t):
        raise ValueError(f"{path}: asks rows {offset}..{offset + n} of a {len(t)}-row trace")
    t = t[offset:offset + n] - t[offset]
    gaps = np.diff(t, prepend=0.0)
    # Mean gap of n-1 intervals becomes 1/rate; the first request arrives at 0.
    scale = (1.0 / rate_per_s) / max(gaps[1:].mean(), 1e-9) if n > 1 else 1.0
    arrival = np.cumsum(gaps * scale)
    return EngineTrace(rate_per_s, arrival,
                       np.clip(prompt[offset:offset + n], 1, max_prompt),
                       np.clip(output[offset:offset + n], 1, max_output))


def write_trace(trace: EngineTrace, path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TRACE_COLUMNS)
        for i in range(len(trace)):
            w.writerow([i, f"{trace.arrival_s[i]:.6f}", int(trace.prompt_tokens[i]), int(trace.output_tokens[i])])


def rate_tag(rate_per_s: float) -> str:
    """File-name form of a rate: 1.5 -> '1p5'."""
    return f"{rate_per_s:g}".replace(".", "p")
