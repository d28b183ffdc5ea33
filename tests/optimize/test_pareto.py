"""Pareto front: definitions checked against brute force and shapes with a known front."""

import itertools

import numpy as np
import pytest

from simcluster.optimize.pareto import ParetoError, pareto_front, pareto_mask


def brute_force(v: np.ndarray) -> list[bool]:
    out = []
    for i, a in enumerate(v):
        dominated = any(np.all(b <= a) and np.any(b < a) for j, b in enumerate(v) if j != i)
        out.append(not dominated)
    return out


@pytest.mark.parametrize("seed,k", [(0, 2), (1, 3), (2, 2)])
def test_mask_matches_brute_force_with_ties(seed, k):
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 6, size=(60, k)).astype(float)   # small integers: many ties
    assert pareto_mask(v).tolist() == brute_force(v)


def test_points_on_a_decreasing_curve_are_all_on_the_front_and_points_above_are_not():
    x = np.linspace(0.1, 1.0, 10)
    curve = np.column_stack([x, 1.0 / x])
    above = curve + 0.05
    mask = pareto_mask(np.vstack([curve, above]))
    assert mask[:10].all() and not mask[10:].any()


def test_front_is_sorted_and_nan_is_worst():
    rows = [{"usd": 5.0, "ttft": 0.1}, {"usd": 1.0, "ttft": float("nan")}, {"usd": 2.0, "ttft": 0.4},
            {"usd": 2.0, "ttft": 0.5}, {"usd": 1.0, "ttft": 0.9}]
    front = pareto_front(rows, ["usd", "ttft"])
    assert [(r["usd"], r["ttft"]) for r in front] == [(1.0, 0.9), (2.0, 0.4), (5.0, 0.1)]


def test_single_objective_front_is_the_minimum_set():
    rows = [{"c": c} for c in (3, 1, 2, 1)]
    assert [r["c"] for r in pareto_front(rows, ["c"])] == [1, 1]


def test_front_invariant_to_record_order():
    rng = np.random.default_rng(7)
    rows = [{"a": float(a), "b": float(b)} for a, b in rng.random((30, 2))]
    reference = pareto_front(rows, ["a", "b"])
    for perm in itertools.islice(itertools.permutations(range(30)), 5):
        assert pareto_front([rows[i] for i in perm], ["a", "b"]) == reference


def test_errors_name_the_key():
    with pytest.raises(ParetoError, match=r"records\[1\]: missing objective 'usd'"):
        pareto_front([{"usd": 1}, {"x": 2}], ["usd"])
    with pytest.raises(ParetoError, match="at least one"):
        pareto_front([{"usd": 1}], [])
    assert pareto_front([], ["usd"]) == []
