"""Accuracy against real training steps measured on the lent GPUs (profiles/measured/*/train_step.csv).

The split is what a user would make on their own cluster (issue #5). The host probes (every 1 x 128
row: Llama-3.2-1B, its 4-layer cut and Llama-3.2-3B; validation.is_probe) are the calibration
instruments and the only rows anything is fitted on: per GPU, strategy and world size, one host time
per layer for each probed model, one host time per step, and the memory held outside the model
(validation.fit_overheads). A row is predicted with its own model's probe fit, else the probed model
of the nearest width, else (a GPU with no probes: h100-sxm) the same strategy and world size on a GPU
that has them (validation.overheads_for). The issue exponent, which a host probe cannot see, is
fitted for tensor parallelism on its balance probe (1B 3 x 4096: validation.is_balance_probe) and
left at inf elsewhere; the overlap slowdown of DDP/FSDP compute beside its collectives is a device
measurement (overlap.csv, cost/overlap.py), not a fit. Every other row, of every model, strategy and world
size, is held out and must be within 10% in time and in peak memory.
"""

import pytest

from simcluster import catalog
from simcluster.cost import cost_model_for
from simcluster.training.validation import (fit_overheads, fit_strategy, is_fit_row, is_probe, measured_path,
                                            overheads_for, predict_row, read_measurements)

# Host-bound eager rows scatter: their p10-p90 spread is 10-40% of the median, and a lent machine's CPU
# speed drifts (two runs of one grid differed by up to 74% on host-bound rows, within 1% on GPU-bound
# ones), so calibrate/ times a model's points interleaved (step_timing.py) and its probes see the same host.
# Peak memory: the end-of-backward gradients the probes peak at (the embedding's / LM head's, and under
# torch pipelining one more gradient-sized buffer) are modelled (memory.stage_memory), so the fitted
# reserve is only what is left (0.06-0.35 GB but DDP 1.0 GB and single 2.2 GB); FSDP's start of backward
# holds the root's gathered weights only. Every held-out peak is within 10%: no memory gap below.
# Every row is timed until its median is known to +-2.5% (at most +-5% where the time cap came
# first: step_timing.py); with 15 rounds a host-bound point's median was uncertain by about +-6%.
# Every held-out row is within 10% in time and memory: nothing here is an expected failure.
CI_LIMIT = 0.05


def _cases():
    out = []
    for path in sorted((catalog.profiles_dir() / "measured").glob("*/train_step.csv")):
        gpu = path.parent.name
        rows = read_measurements(path)
        for strategy, world in sorted(set(zip(rows["strategy"], rows["world_size"]))):
            out.append(pytest.param(gpu, strategy, int(world), id=f"{gpu}-{strategy}-ws{world}"))
    return out


@pytest.fixture(scope="module")
def cms():
    return {}


@pytest.fixture(scope="module")
def fits(cms):
    """fit_overheads of every GPU's probes ({gpu: fits}), computed once."""
    out = {}
    for path in sorted((catalog.profiles_dir() / "measured").glob("*/train_step.csv")):
        gpu = path.parent.name
        rows = read_measurements(path)
        cm = cms.setdefault(gpu, cost_model_for(gpu, "calibrated"))
        # Only the probes are handed to the fit: nothing else can leak into it.
        out[gpu] = fit_overheads(rows[rows.apply(is_fit_row, axis=1)], gpu, cm)
    return out


@pytest.mark.parametrize("gpu,strategy,world", _cases())
def test_measured_steps_within_ten_percent(gpu, strategy, world, cms, fits):
    cm = cms.setdefault(gpu, cost_model_for(gpu, "calibrated"))
    rows = read_measurements(measured_path(gpu))
    rows = rows[(rows.strategy == strategy) & (rows.world_size == world)]
    held_out, failures = 0, []
    for r in rows.itertuples():
        overheads, source = overheads_for(fits, gpu, r)
        p = predict_row(r, gpu, cm, overheads)
        split = "fit" if is_fit_row(r) else "held-out"
        print(f"{gpu} {strategy} ws={world} {split:8s} {r.model} mb={r.micro_batch} s={r.seq_len}: "
              f"time {p['time_error']:+.1%} memory {p['memory_error']:+.1%} ({source})")
        if split == "fit":
            continue
        held_out += 1
        assert source != "none"
        if abs(p["time_error"]) > 0.10 or abs(p["memory_error"]) > 0.10:
            failures.append((r.model, r.micro_batch, r.seq_len, round(p["time_error"], 3),
                             round(p["memory_error"], 3)))
    assert held_out > 0
    assert not failures, failures


def test_every_row_but_the_probes_is_held_out():
    from simcluster.training.validation import is_balance_probe
    for path in sorted((catalog.profiles_dir() / "measured").glob("*/train_step.csv")):
        rows = read_measurements(path)
        for r in rows.itertuples():
            assert is_probe(r) == (int(r.micro_batch) * int(r.seq_len) <= 128 * 2)
            assert is_fit_row(r) == (is_probe(r) or is_balance_probe(r))
            # Balance probes exist for the strategies with collectives inside every layer's forward.
            assert not is_balance_probe(r) or r.strategy in ("tp", "fsdp")
    rows = read_measurements(measured_path("h200-sxm"))
    fit = rows[[is_probe(r) for r in rows.itertuples()]]
    assert set(fit.seq_len) == {128} and set(fit.micro_batch) == {1}
    assert set(fit.model) == {"llama-3.2-1b-4l", "llama-3.2-1b", "llama-3.2-3b"}
    balance = rows[[is_balance_probe(r) for r in rows.itertuples()]]
    assert set(balance.model) == {"llama-3.2-1b"}
    assert sorted(zip(balance.strategy, balance.world_size)) == [("fsdp", 2), ("fsdp", 4), ("tp", 2), ("tp", 4)]


def test_the_balance_probe_gives_back_the_issue_exponent():
    """Rows made by known overheads with issue exponent 2.5 (host and device stalling each other near
    balance): the host probes give back the host figures, the balance probe the exponent."""
    from simcluster.training.overheads import FrameworkOverheads
    from simcluster.training.validation import BALANCE_PROBES, fit_strategy, is_balance_probe
    import pandas as pd
    gpu, world = "h200-sxm", 2
    cm = cost_model_for(gpu, "calibrated")
    (_, model, mb, seq), = [p for p in BALANCE_PROBES if p[0] == "tp"]
    truth = FrameworkOverheads(host_s_per_layer=13e-3, memory_reserve_bytes=1e8, host_s_per_step=8e-3,
                               issue_exponent=2.5)
    points = [("llama-3.2-1b-4l", 4, 1, 128), ("llama-3.2-1b", 16, 1, 128), ("llama-3.2-1b", 16, mb, seq)]
    rows = pd.DataFrame([dict(model=m, strategy="tp", world_size=world, micro_batch=b, seq_len=s, grad_accum=1,
                              time_s=1.0, peak_memory_bytes=1e9, precision="fused", n_layers=n) for m, n, b, s in points])
    for i, r in enumerate(rows.itertuples()):
        p = predict_row(r, gpu, cm, truth)
        rows.loc[i, ["time_s", "peak_memory_bytes"]] = p["predicted_time_s"], p["predicted_peak_memory_bytes"]
    assert [is_balance_probe(r) for r in rows.itertuples()] == [False, False, True]
    fit = fit_strategy(rows, gpu, cm)["llama-3.2-1b"]
    assert fit.issue_exponent == 2.5
    assert fit.host_s_per_layer == pytest.approx(truth.host_s_per_layer, rel=0.03)
    # Without the balance probe the exponent stays unfitted (inf).
    assert fit_strategy(rows.iloc[:2], gpu, cm)["llama-3.2-1b"].issue_exponent == float("inf")


def _synthetic_rows(gpu, cm, strategy, world, truths):
    """Rows a framework with known overheads per model family would measure: probes of three models
    and timed points."""
    import pandas as pd
    points = [("llama-3.2-1b-4l", 4, 1, 128), ("llama-3.2-1b", 16, 1, 128), ("llama-3.2-1b", 16, 2, 2048),
              ("llama-3.2-3b", 28, 1, 128), ("llama-3.2-3b", 28, 2, 2048)]
    rows = pd.DataFrame([dict(model=m, strategy=strategy, world_size=world, micro_batch=mb, seq_len=s,
                              grad_accum=2 * world if strategy == "pp" else 1, time_s=1.0, peak_memory_bytes=1e9,
                              precision="fused", n_layers=n) for m, n, mb, s in points])
    for i, r in enumerate(rows.itertuples()):
        truth = truths["llama-3.2-3b" if r.model == "llama-3.2-3b" else "llama-3.2-1b"]
        p = predict_row(r, gpu, cm, truth)
        rows.loc[i, ["time_s", "peak_memory_bytes"]] = p["predicted_time_s"], p["predicted_peak_memory_bytes"]
    return rows


@pytest.mark.parametrize("strategy,world", [("single", 1), ("ddp", 2), ("fsdp", 4), ("tp", 2), ("pp", 2)])
def test_host_probes_give_the_host_figures_per_model(strategy, world, cms):
    """The probe fit is a solve, not a search: probe rows made by known overheads (a host time per layer
    for each model, one per step) give them back, and the timed rows, never fitted on, are then
    predicted exactly; a model without probes takes the nearest probed width."""
    from simcluster.training.overheads import FrameworkOverheads
    gpu = "h200-sxm"
    cm = cms.setdefault(gpu, cost_model_for(gpu, "calibrated"))
    from simcluster.training.validation import measured_overlap_slowdown
    kappa = measured_overlap_slowdown(gpu, strategy, world)      # measured, not fitted: the truth carries it
    truths = {"llama-3.2-1b": FrameworkOverheads(host_s_per_layer=4e-3, memory_reserve_bytes=1e9, host_s_per_step=15e-3,
                                                 overlap_slowdown=kappa),
              "llama-3.2-3b": FrameworkOverheads(host_s_per_layer=5.2e-3, memory_reserve_bytes=1e9,
                                                 host_s_per_step=15e-3, overlap_slowdown=kappa)}
    rows = _synthetic_rows(gpu, cm, strategy, world, truths)
    fit = fit_strategy(rows, gpu, cm)
    assert set(fit) == set(truths)
    for family, truth in truths.items():
        assert fit[family].host_s_per_layer == pytest.approx(truth.host_s_per_layer, rel=0.02)
        assert fit[family].host_s_per_step == pytest.approx(truth.host_s_per_step, rel=0.02, abs=2e-4)
    fits = {gpu: {(strategy, world, f): oh for f, oh in fit.items()}}
    for r in rows.itertuples():
        overheads, source = overheads_for(fits, gpu, r)
        assert source.endswith("probes") and not source.startswith("nearest")
        assert abs(predict_row(r, gpu, cm, overheads)["time_error"]) < 0.01
    # Without the 3B probe, the 3B rows take the 1B fit (the only probed width).
    no3b = fit_strategy(rows[rows.model != "llama-3.2-3b"], gpu, cm)
    fits = {gpu: {(strategy, world, f): oh for f, oh in no3b.items()}}
    r3 = next(r for r in rows.itertuples() if r.model == "llama-3.2-3b")
    assert overheads_for(fits, gpu, r3)[1] == "nearest: llama-3.2-1b probes"
    # A GPU with no probes borrows another GPU's fit of the same strategy and world size.
    fits["h100-sxm"] = {}
    assert overheads_for(fits, "h100-sxm", r3)[1] == "h200-sxm nearest: llama-3.2-1b probes"


def test_forward_host_share_is_read_off_the_probes():
    """The forward's share of host time comes from the probes' phase columns (median), and falls back to the
    default where a strategy's rows have none (the pipeline)."""
    import math
    from types import SimpleNamespace as Row
    from simcluster.training.overheads import FORWARD_HOST_SHARE
    from simcluster.training.validation import forward_host_share
    probes = [Row(host_forward_s=0.04, host_backward_s=0.06), Row(host_forward_s=0.03, host_backward_s=0.07),
              Row(host_forward_s=0.046, host_backward_s=0.054)]
    assert forward_host_share(probes) == pytest.approx(0.4)
    assert forward_host_share([Row(host_forward_s=math.nan, host_backward_s=math.nan)]) == FORWARD_HOST_SHARE
    assert forward_host_share([Row()]) == FORWARD_HOST_SHARE
    rows = read_measurements(measured_path("h200-sxm"))
    tp = fit_strategy(rows[(rows.strategy == "tp") & (rows.world_size == 2)], "h200-sxm",
                      cost_model_for("h200-sxm", "calibrated"))
    assert all(0.25 < oh.forward_host_share < 0.5 and oh.forward_host_share != FORWARD_HOST_SHARE
               for oh in tp.values())


def test_every_row_is_known_to_half_the_threshold():
    """Every row is timed until its median is known (calibrate/step_timing.py) and carries the 95%
    interval it reached (time_ci_low_s / time_ci_high_s), within CI_LIMIT, so a 10% check on it
    measures the model, not the sampling. The one exception is the DDP row timed beside the Kineto
    trace (its detail says so), recorded in an earlier run with 20 fixed rounds."""
    for path in sorted((catalog.profiles_dir() / "measured").glob("*/train_step.csv")):
        rows = read_measurements(path)
        untimed = rows[rows.time_ci_low_s.isna()]
        assert all(d.endswith("timed unprofiled") for d in untimed.detail), path
        for r in rows[rows.time_ci_low_s.notna()].itertuples():
            assert r.time_ci_low_s <= r.time_s <= r.time_ci_high_s
            assert (r.time_ci_high_s - r.time_ci_low_s) / 2 / r.time_s <= CI_LIMIT, r
            assert r.timed_steps >= 15
