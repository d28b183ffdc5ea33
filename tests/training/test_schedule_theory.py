"""Pipeline schedules against their closed forms (Narayanan et al. 2021 §2.2; Qi et al. 2023)."""

import pytest

from simcluster.cost import cost_model_for
from simcluster.training.ops import ChunkCost
from simcluster.training.placement import plan_groups
from simcluster.training.plan import TrainingPlan
from simcluster.training.schedule import SCHEDULES, bubble_fraction
from simcluster.training.simulate import breakdown_of, replay_iteration

CM = cost_model_for("h100-sxm", "roofline")


def _equal_chunks(n, f_s, b_s, w_s=0.0):
    # No parameters, no sends: stage times only.
    return [ChunkCost(j, 1, f_s, b_s, w_s, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0) for j in range(n)]


def _run(schedule, p, m, v=1, f_s=1.0, b_s=2.0, w_s=0.0):
    plan = TrainingPlan(gpu="h100-sxm", n_gpus=p, pp=p, seq_len=1024, global_batch=m, schedule=schedule,
                        virtual_stages=v)
    devices, _ = replay_iteration(plan, _equal_chunks(p * v, f_s / v, b_s / v, w_s / v), CM, plan_groups(plan, 8))
    return breakdown_of(devices)


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b"])
@pytest.mark.parametrize("p,m", [(2, 1), (4, 8), (8, 8), (4, 32)])
def test_bubble_fraction_matches_closed_form(schedule, p, m):
    b = _run(schedule, p, m)
    assert b["time_s"] == pytest.approx((m + p - 1) * 3.0)
    assert b["bubble_s"] / b["time_s"] == pytest.approx((p - 1) / (m + p - 1))
    assert b["bubble_s"] / b["time_s"] == pytest.approx(bubble_fraction(p, m))


@pytest.mark.parametrize("v", [2, 4])
def test_interleaving_divides_bubble_by_v(v):
    p, m = 4, 8
    plain = _run("1f1b", p, m)
    inter = _run("interleaved", p, m, v)
    assert plain["bubble_s"] == pytest.approx(3 * 3.0)
    assert inter["bubble_s"] == pytest.approx(plain["bubble_s"] / v)
    assert inter["compute_s"] == pytest.approx(plain["compute_s"])


def test_more_micro_batches_smaller_bubble():
    fractions = [(_run("1f1b", 8, m)["bubble_s"] / _run("1f1b", 8, m)["time_s"]) for m in (4, 8, 16, 64)]
    assert fractions == sorted(fractions, reverse=True)
    assert fractions[-1] < 0.1 < fractions[0]


def test_zero_bubble_fills_bubbles_with_weight_gradients():
    p, m = 4, 8
    one = _run("1f1b", p, m, f_s=1.0, b_s=2.0)
    zb = _run("zero_bubble", p, m, f_s=1.0, b_s=1.0, w_s=1.0)
    assert zb["compute_s"] == pytest.approx(one["compute_s"])
    # ZB-H1 (Qi et al. 2023 §3.1): bubble (p-1)(F+B-W) instead of (p-1)(F+B+W) with W split off.
    assert zb["bubble_s"] == pytest.approx((p - 1) * (1.0 + 1.0 - 1.0))
    assert zb["bubble_s"] < one["bubble_s"] / 2


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_pass_runs_once(name):
    p, m, v = 4, 8, (2 if name == "interleaved" else 1)
    seen = []
    for d in range(p):
        seen += SCHEDULES[name](p, m, v, d)
    kinds = "FBW" if name == "zero_bubble" else "FB"
    assert sorted(seen) == sorted((k, i, c * p + d) for k in kinds for i in range(m) for c in range(v)
                                  for d in range(p))
