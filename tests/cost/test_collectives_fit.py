"""Collectives fitted to measurements: recovery of a known alpha-beta law, methods, closed forms."""

import math

import numpy as np
import pandas as pd
import pytest

from simcluster.cost.collectives import LinkParams, bus_factor, collective_time_s
from simcluster.cost.collectives_fit import CalibratedCollectives, CollectiveCurve, fit_collectives, link_efficiency

SIZES = [4096 * 4**i for i in range(12)]


def synthetic(op="all_reduce", world=4, latency_s=12e-6, busbw=360e9):
    """nccl-tests style rows from an exact alpha-beta law."""
    algbw = busbw / bus_factor(op, world)
    return pd.DataFrame({"op": op, "world_size": world, "bytes": SIZES,
                         "time_s": [latency_s + s / algbw for s in SIZES]})


def test_curve_recovers_latency_and_bus_bandwidth():
    frame = synthetic()
    curve = CollectiveCurve.fit("all_reduce", 4, frame["bytes"], frame["time_s"])
    assert curve.latency_s == pytest.approx(12e-6, rel=0.02)
    assert curve.bus_bandwidth_bytes_per_s() == pytest.approx(360e9, rel=0.02)


def test_interpolation_inside_and_line_outside_the_measured_sizes():
    frame = synthetic()
    curve = fit_collectives(frame)[("all_reduce", 4)]
    t, covered = curve.predict_s(2 * 4096 * 4**3)
    assert covered and t == pytest.approx(12e-6 + 2 * 4096 * 4**3 / (360e9 / 1.5), rel=0.03)
    _, covered = curve.predict_s(2**40)
    assert not covered


def test_protocol_floor_is_interpolated():
    """A latency floor at small sizes (NCCL's LL protocol) is followed between measured sizes."""
    frame = synthetic()
    floor = 25e-6
    frame["time_s"] = np.maximum(frame["time_s"], floor)
    curve = fit_collectives(frame)[("all_reduce", 4)]
    t, _ = curve.predict_s(8192)
    assert t == pytest.approx(floor, rel=0.05)


def links():
    return LinkParams(8, 450e9 * 0.8, 3e-6, 50e9 * 0.8, 8e-6)


def test_methods_measured_fitted_transferred():
    curves = fit_collectives(synthetic())
    eff = link_efficiency(curves, 450e9, 3e-6)
    own = CalibratedCollectives(links(), 450e9, curves, eff, transferred=False)
    assert own.time_s("all_reduce", 2**20, 4)[1] == "measured"
    assert own.time_s("all_reduce", 2**20, 8)[1] == "fitted"
    other = CalibratedCollectives(links(), 900e9, {}, eff, transferred=True)
    assert other.time_s("all_reduce", 2**20, 8)[1] == "transferred"
    bare = CalibratedCollectives(links(), 450e9, {}, {}, transferred=False)
    assert bare.time_s("all_reduce", 2**20, 8)[1] == "alpha-beta"


def test_unmeasured_world_size_uses_measured_efficiency():
    """At 8 GPUs the closed-form ring runs on datasheet bandwidth × measured bus efficiency."""
    curves = fit_collectives(synthetic(busbw=360e9, latency_s=30e-6))
    eff = link_efficiency(curves, 450e9, 3e-6)
    assert eff["all_reduce"][0] == pytest.approx(0.8, rel=0.02)
    cc = CalibratedCollectives(links(), 450e9, curves, eff, transferred=False)
    size = 2**30
    t, _ = cc.time_s("all_reduce", size, 8)
    ring = 2 * 7 / 8 * size / (450e9 * eff["all_reduce"][0])
    assert t == pytest.approx(ring, rel=0.02)
    # Small messages: the measured fixed overhead plus datasheet hops, not 14 × the 2-GPU floor.
    small, _ = cc.time_s("all_reduce", 4096, 8)
    assert eff["all_reduce"][1] == pytest.approx(30e-6 - 2 * 3 * 3e-6, rel=0.05)
    assert small == pytest.approx(eff["all_reduce"][1] + collective_time_s("all_reduce", 4096, 8, cc.links_for("all_reduce")))
    assert small < 14 * 30e-6 / 6
    # Multi-node goes through the hierarchical closed form and costs more than one node.
    assert cc.time_s("all_reduce", size, 16)[0] > t


def test_measured_profiles_collectives_if_present():
    from simcluster.cost.tables import load_tables, measured_gpus
    frames = [load_tables(g).get("collectives.csv") for g in measured_gpus()]
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        pytest.skip("no collectives.csv measured yet")
    curves = fit_collectives(frames[0])
    assert curves and all(c.latency_s > 0 and c.bandwidth_bytes_per_s > 0 for c in curves.values())
    assert all(math.isfinite(c.predict_s(2**24)[0]) for c in curves.values())


def test_closed_form_api_unchanged():
    assert collective_time_s("all_reduce", 2**20, 8, links()) > 0
