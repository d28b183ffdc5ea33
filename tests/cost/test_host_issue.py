"""cost/host_issue.py: the eager host/device pipeline."""

import numpy as np
import pytest

from simcluster.cost.host_issue import eager_iteration_s, occurrence_order, pipelined_s
from simcluster.llm.ops import Op


def _recurrence(host, device):
    issued, end = 0.0, 0.0
    for h, d in zip(host, device):
        issued += h
        end = max(end, issued) + d
    return end


def test_closed_form_equals_the_recurrence():
    rng = np.random.default_rng(7)
    for _ in range(50):
        n = int(rng.integers(1, 200))
        host, device = rng.exponential(1.0, n), rng.exponential(1.0, n) * rng.choice([0.1, 1, 10])
        assert pipelined_s(host, device) == pytest.approx(_recurrence(host, device))
    assert pipelined_s([], []) == 0.0


def test_host_bound_and_device_bound_limits():
    # Host-bound: all the host's issue time plus the last kernel; device-bound: all the device
    # time plus the first kernel's issue.
    assert pipelined_s([1.0] * 10, [0.1] * 10) == pytest.approx(10.1)
    assert pipelined_s([0.1] * 10, [1.0] * 10) == pytest.approx(10.1)
    # A long kernel early lets the host run ahead: its issue time hides behind it.
    assert pipelined_s([1, 1, 1, 1], [5, 0, 0, 0]) == pytest.approx(6.0)


def _op(name, repeat, kernels=1):
    return Op(name=name, kind="elementwise", flops=0.0, bytes=0.0, repeat=repeat, kernels=kernels)


def test_layers_run_in_order_and_twice_listed_ops_twice_per_layer():
    ops = [_op("embed", 1), _op("norm", 4), _op("mlp", 2), _op("head", 1)]
    order = occurrence_order(ops)
    assert order == [(0, 1), (1, 2), (2, 1), (1, 2), (2, 1), (3, 1)]
    assert sum(t for i, t in order if i == 1) == 4
    # Without layers: as listed.
    assert occurrence_order([_op("a", 1), _op("b", 1)]) == [(0, 1), (1, 1)]


def test_eager_iteration_spreads_each_op_over_its_kernels():
    ops = [_op("a", 1, kernels=4), _op("b", 1, kernels=1)]
    # Host 1 s per kernel: 5 s of issue; device 4 s for a (1 s a kernel), 0.5 s for b.
    assert eager_iteration_s(ops, [4.0, 0.5], 1.0) == pytest.approx(_recurrence([1] * 5, [1, 1, 1, 1, 0.5]))
    assert eager_iteration_s(ops, [4.0, 0.5], 0.0) == pytest.approx(4.5)
