"""Per-layer expert loads (tokens routed to each logical expert): read from CSV or generate.

A loads array has shape [layers, n_logical]; entry [l, e] is the number of tokens the router
sent to logical expert e of MoE layer l over the measurement window.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


class LoadsFileError(ValueError):
    """A loads CSV that cannot be read; the message is one line naming file, row and column."""


def read_loads_csv(path: str | Path) -> np.ndarray:
    """Read expert loads: one row per MoE layer, one column per logical expert.

    An optional header row is recognised when its first cell is not a number. Values must be
    finite and non-negative; every row must have the same number of columns.

    Returns float64 array [layers, n_logical].
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise LoadsFileError(f"{path}: cannot read loads file ({err.strerror})") from None
    rows = [row for row in csv.reader(text.splitlines())]
    numbered = [(i + 1, row) for i, row in enumerate(rows) if any(cell.strip() for cell in row)]
    if numbered and not _is_number(numbered[0][1][0]):
        numbered = numbered[1:]  # header row
    if not numbered:
        raise LoadsFileError(f"{path}: no data rows; expected one row of expert loads per layer")
    width = len(numbered[0][1])
    values = np.empty((len(numbered), width), dtype=float)
    for layer, (line, row) in enumerate(numbered):
        if len(row) != width:
            raise LoadsFileError(
                f"{path}: row {line} has {len(row)} columns; expected {width} (one per expert)"
            )
        for col, cell in enumerate(row):
            try:
                value = float(cell)
            except ValueError:
                raise LoadsFileError(
                    f"{path}: row {line}, column {col + 1}: {cell.strip()!r} is not a number;"
                    " expected a non-negative token count"
                ) from None
            if not np.isfinite(value) or value < 0:
                raise LoadsFileError(
                    f"{path}: row {line}, column {col + 1}: {value} is not a finite"
                    " non-negative token count"
                )
            values[layer, col] = value
    return values


def write_loads_csv(path: str | Path, loads: np.ndarray) -> None:
    """Write loads in the format `read_loads_csv` reads, with an `expert_<i>` header."""
    loads = np.asarray(loads, dtype=float)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"expert_{e}" for e in range(loads.shape[1])])
        for row in loads:
            writer.writerow([repr(float(v)) for v in row])


def generate_loads(
    n_layers: int, n_experts: int, tokens: int, skew: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Synthetic skewed expert loads, deterministic in `seed`.

    Expert popularity follows a Zipf law of exponent `skew` (p_i ∝ 1/rank_i**skew), perturbed
    per layer by a Dirichlet draw around it (about 20 % relative noise) and shuffled so the hot
    experts differ per layer; `tokens` routed tokens are then split by a multinomial draw.
    skew=0 gives near-uniform loads. For 256 experts, skew=0.5 puts the hottest expert near
    8x the mean and skew=0.3 near 3.5x.

    Returns float64 array [n_layers, n_experts] of token counts, each row summing to `tokens`.
    """
    if n_layers < 1 or n_experts < 1 or tokens < 0 or skew < 0:
        raise ValueError(
            f"generate_loads: need n_layers>=1, n_experts>=1, tokens>=0, skew>=0;"
            f" got {n_layers}, {n_experts}, {tokens}, {skew}"
        )
    rng = np.random.default_rng(seed)
    zipf = np.arange(1, n_experts + 1, dtype=float) ** (-skew)
    # Dirichlet concentration 20 per expert: relative noise of each share about 1/sqrt(20).
    alpha = zipf / zipf.sum() * 20.0 * n_experts
    loads = np.empty((n_layers, n_experts))
    for layer in range(n_layers):
        popularity = rng.dirichlet(rng.permutation(alpha))
        loads[layer] = rng.multinomial(tokens, popularity)
    return loads


def generate_source_fractions(
    n_layers: int, n_experts: int, n_nodes: int, locality: float = 0.0, seed: int = 0
) -> np.ndarray:
    """Where the tokens routed to each expert come from: fractions per node, rows sum to 1.

    locality=0 gives the uniform default (every node sends 1/n_nodes of each expert's tokens);
    locality=1 gives each expert one home node that sends all of its tokens (as when requests
    of one tenant, pinned to one node, prefer a few experts).

    Returns float64 array [n_layers, n_experts, n_nodes].
    """
    if not 0.0 <= locality <= 1.0:
        raise ValueError(f"generate_source_fractions: locality must be in [0, 1], got {locality}")
    rng = np.random.default_rng(seed)
    home = rng.integers(0, n_nodes, size=(n_layers, n_experts))
    fractions = np.full((n_layers, n_experts, n_nodes), (1.0 - locality) / n_nodes)
    layer_idx, expert_idx = np.meshgrid(range(n_layers), range(n_experts), indexing="ij")
    fractions[layer_idx, expert_idx, home] += locality
    return fractions


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True
