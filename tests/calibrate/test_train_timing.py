"""calibrate/step_timing.py and train_step.py: the training grid, interleaved timing, the kernel
intervals of a profiled step and the out-of-memory fallback (torch-backed; they skip without it)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def test_union_of_kernel_intervals():
    pytest.importorskip("torch")
    from calibrate.step_timing import union_s as _union_s
    # Overlapping, nested, touching and disjoint intervals (microseconds).
    spans = [(0, 10), (5, 15), (6, 7), (15, 20), (30, 40)]
    assert _union_s(spans) == pytest.approx(30e-6)
    assert _union_s([]) == 0.0


def test_train_grid_has_host_probes_at_two_depths_and_gpu_bound_points():
    pytest.importorskip("torch")
    from calibrate.step_timing import MIN_TIMED_STEPS, TIMED_STEPS, timed_step_count
    from calibrate.train_step import HOST_PROBE, family, train_grid
    for strategy in ("single", "ddp", "fsdp", "tp", "pp"):
        grid = train_grid(False, strategy)
        probed = {cfg.n_layers for cfg, points in grid if HOST_PROBE in points}
        assert len(probed) >= 2                       # host time per layer and per step
        assert max(mb * s for _, points in grid for mb, s in points) >= 4096
        # The shallow probe is timed with the model it is cut from.
        assert len({family(cfg) for cfg, _ in grid}) == len(grid) - 1
    assert timed_step_count(0.01, False) == TIMED_STEPS
    assert timed_step_count(1.0, False) == MIN_TIMED_STEPS


def test_points_are_timed_interleaved_and_a_failed_point_is_dropped():
    torch = pytest.importorskip("torch")
    from calibrate.step_timing import StepTiming, time_interleaved
    calls = []

    def maker(name, fail=False):
        def make():
            if fail:
                raise RuntimeError("cannot build\nsecond line")
            return lambda: calls.append(name)
        return make

    makers = [("m", maker("a")), ("m", maker("b")), ("x", maker("c", fail=True)), ("n", maker("d"))]
    out = time_interleaved(makers, torch.device("cpu"), smoke=True)
    assert out[2] == "RuntimeError: cannot build"
    assert all(isinstance(t, StepTiming) and t.steps == 2 for i, t in enumerate(out) if i != 2)
    # Warm-up point by point (one step each in smoke), then rounds, every other one reversed.
    assert calls == ["a", "b", "d", "a", "b", "d", "d", "b", "a"]


def test_a_point_out_of_memory_beside_its_family_is_timed_alone(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    import calibrate.train_step as ts
    from calibrate.context import make_context
    from calibrate.step_timing import OOM, StepTiming
    from calibrate.table import read_table

    timing = StepTiming(0.5, 0.4, 0.6, 0.3, 1000, 15)
    calls = []

    def fake_group(group, strategy, device, gqa, grad_accum, smoke, deadline_s=float("inf")):
        rows = [(cfg, mb, seq) for cfg, points in group for mb, seq in points]
        calls.append(len(rows))
        described = {(cfg.name, mb, seq): ("p", "d", 1) for cfg, mb, seq in rows}
        # Beside its family the largest point runs out of memory; alone it fits.
        out = [OOM if len(rows) > 1 and mb * seq == max(m * s for _, m, s in rows) else timing
               for _, mb, seq in rows]
        return rows, out, described

    monkeypatch.setattr(ts, "_time_group", fake_group)
    ctx = make_context(torch.device("cpu"), tmp_path, True)
    ctx.with_deadline(1e9)
    ts.run_strategy(ctx, "single")
    rows = read_table(tmp_path / "train_step.csv")
    alone = [r for r in rows if "timed alone" in r["detail"]]
    assert len(rows) == sum(len(p) for _, p in ts.train_grid(True, "single"))
    assert len(alone) == 1 and calls == [len(rows), 1]          # the family together, then the one alone


def test_median_interval_is_the_order_statistics_of_the_binomial_table():
    pytest.importorskip("torch")
    from calibrate.step_timing import ci_fraction, median_ci
    # n = 15: ranks 4 and 12 (the exact binomial 95% interval, coverage 96.5%).
    assert median_ci(list(range(1, 16))) == (4, 12)
    # n = 100: ranks 41 and 60.
    assert median_ci(list(range(100, 0, -1))) == (41, 60)
    assert median_ci([7.0]) == (7.0, 7.0)
    assert ci_fraction([2.0] * 30) == 0.0
    # More samples of the same spread narrow the interval.
    import random
    rng = random.Random(3)
    few = [rng.gauss(1.0, 0.2) for _ in range(15)]
    many = few + [rng.gauss(1.0, 0.2) for _ in range(185)]
    assert ci_fraction(many) < ci_fraction(few)


def _scripted_steps(monkeypatch, spreads: dict):
    """Replace the step clock: each step callable returns its name, whose wall time is drawn
    around 1 s with its own relative spread (seeded)."""
    import random
    import calibrate.step_timing as st
    rng = random.Random(11)

    def fake_one_step(step, device, clocks=None):
        name = step()
        t = 1.0 + rng.gauss(0.0, spreads[name])
        return t, 0.9 * t
    monkeypatch.setattr(st, "one_step", fake_one_step)
    return st


def test_rounds_go_on_until_every_median_is_known(monkeypatch):
    torch = pytest.importorskip("torch")
    st = _scripted_steps(monkeypatch, {"quiet": 0.001, "noisy": 0.2})
    makers = [("m", lambda: (lambda: "quiet")), ("m", lambda: (lambda: "noisy"))]
    quiet, noisy = st.time_interleaved(makers, torch.device("cpu"), smoke=False)
    # Interleaved: both points get every round, well past the first 15-20.
    # (1 s warm steps: the first rounds are MIN_TIMED_STEPS.)
    assert quiet.steps == noisy.steps > st.MIN_TIMED_STEPS
    assert st.ci_fraction([t for t, _ in noisy.rounds]) <= st.TARGET_CI_FRACTION or noisy.steps == st.MAX_TIMED_STEPS
    assert noisy.ci_low_s < noisy.time_s < noisy.ci_high_s
    assert len(noisy.rounds) == noisy.steps and noisy.rounds[0][1] == pytest.approx(0.9 * noisy.rounds[0][0])
    # A quiet family stops at its first rounds.
    (alone,) = st.time_interleaved([("q", lambda: (lambda: "quiet"))], torch.device("cpu"), smoke=False)
    assert alone.steps == st.MIN_TIMED_STEPS


def test_extra_rounds_stop_at_the_deadline(monkeypatch):
    torch = pytest.importorskip("torch")
    import time
    st = _scripted_steps(monkeypatch, {"noisy": 0.2})
    (timing,) = st.time_interleaved([("m", lambda: (lambda: "noisy"))], torch.device("cpu"), smoke=False,
                                    deadline_s=time.monotonic())
    assert timing.steps == st.MIN_TIMED_STEPS
    monkeypatch.setattr(st, "MAX_TIMED_STEPS", 30)
    (timing,) = st.time_interleaved([("m", lambda: (lambda: "noisy"))], torch.device("cpu"), smoke=False)
    assert timing.steps == 30


def test_a_known_point_retires_from_the_rounds(monkeypatch):
    torch = pytest.importorskip("torch")
    st = _scripted_steps(monkeypatch, {"quiet": 0.001, "noisy": 0.2})
    makers = [("m", lambda: (lambda: "quiet")), ("m", lambda: (lambda: "noisy"))]
    quiet, noisy = st.time_interleaved(makers, torch.device("cpu"), smoke=False, retire=True)
    # The quiet point is known after its first rounds and leaves; the noisy one goes on.
    assert quiet.steps == st.MIN_TIMED_STEPS < noisy.steps
    assert st.ci_fraction([t for t, _ in quiet.rounds]) <= st.TARGET_CI_FRACTION
