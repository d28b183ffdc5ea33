"""Pareto fronts: the records no other record beats on every objective at once.

Record a dominates record b when a is no worse on every objective and strictly better on one
(all objectives minimised). Records equal on every objective do not dominate each other, so both
stay on the front. NaN counts as worse than any number.
"""

from __future__ import annotations

import numpy as np


class ParetoError(ValueError):
    """An objective that is not in the records, or no objective at all; one line."""


def pareto_mask(values) -> np.ndarray:
    """Boolean mask of the non-dominated rows of `values` (n rows × k objectives, minimised).

    O(n² k), fine for the hundreds of simulated plans a search keeps.

    >>> pareto_mask([[1, 5], [2, 2], [3, 3], [1, 5]]).tolist()
    [True, True, False, True]
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise ParetoError(f"values: shape {v.shape}; expected rows × objectives")
    v = np.where(np.isnan(v), np.inf, v)
    n = len(v)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        no_worse = np.all(v <= v[i], axis=1)
        better = np.any(v < v[i], axis=1)
        keep[i] = not np.any(no_worse & better)
    return keep


def pareto_front(records: list[dict], minimize: tuple[str, ...] | list[str]) -> list[dict]:
    """The non-dominated records, sorted by the objectives in the order given.

    records: flat dicts; minimize: keys to minimise (negate a quantity to maximise it).

    >>> rows = [{"usd": 3, "s": 0.2}, {"usd": 2, "s": 0.5}, {"usd": 4, "s": 0.3}]
    >>> [r["usd"] for r in pareto_front(rows, ["usd", "s"])]
    [2, 3]
    """
    if not minimize:
        raise ParetoError("minimize: expected at least one objective key")
    if not records:
        return []
    for key in minimize:
        missing = [i for i, r in enumerate(records) if key not in r]
        if missing:
            raise ParetoError(f"records[{missing[0]}]: missing objective {key!r}")
    values = [[float(r[k]) if r[k] is not None else np.nan for k in minimize] for r in records]
    mask = pareto_mask(values)
    front = [r for r, m in zip(records, mask) if m]
    return sorted(front, key=lambda r: tuple(float(r[k]) for k in minimize))
