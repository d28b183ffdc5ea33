"""Eager iterations: a host that issues kernels one by one and a device that runs them in order.

Without CUDA graphs every kernel of a forward is issued by the framework's Python on the host
(module calls, dispatch, launch), and the device runs each kernel once it is issued and the one
before it has finished. The iteration ends when the device has run the last kernel (a serving
engine then reads the sampled tokens). That is a two-stage pipeline: with H_i the host time by
which kernel i is issued and d_i its device time,

    end_i = max(end_{i-1}, H_i) + d_i,   so   end_N = max_i (H_i + d_i + ... + d_N),

the max-plus closed form of the recurrence (a tandem queue's departure time), evaluated in one
vectorised pass. A host-bound iteration takes the host's issue time plus the device tail after
the last issue; a device-bound one the device time plus the host's head start.

The host's issue time per kernel is a property of the framework and the CPU, not of the kernel:
simcluster takes it from the host probe of the whole-model benchmark (`host_s` of the row of one
sequence decoding at context 512 in model_forward.csv, divided over its listed kernels), as the
training simulator takes its framework overheads from its probes; the same rate prices that
model's prefill rows too.
"""

from __future__ import annotations

import numpy as np

from simcluster.llm.ops import Op


def pipelined_s(host_s: np.ndarray, device_s: np.ndarray) -> float:
    """End time of the last of a sequence of kernels issued `host_s` apart (each entry the host
    time spent issuing that kernel) and run for `device_s` each, in order, on one stream."""
    host_s, device_s = np.asarray(host_s, float), np.asarray(device_s, float)
    if host_s.size == 0:
        return 0.0
    issued = np.cumsum(host_s)
    # d_i + ... + d_N for every i.
    tail = np.cumsum(device_s[::-1])[::-1]
    return float(np.max(issued + tail))


def occurrence_order(ops: list[Op]) -> list[tuple[int, int]]:
    """(index into ops, occurrences) in issue order: ops of repeat 1 before and after the layers
    as listed; the others form the layer body, run once per layer, each op's repeat / layers times
    (a norm or residual add listed with repeat 2 x layers runs twice per layer). The number of
    layers is the smallest repeat above 1."""
    layered = [o.repeat for o in ops if o.repeat > 1]
    if not layered:
        return [(i, 1) for i in range(len(ops))]
    layers = min(layered)
    first = next(i for i, o in enumerate(ops) if o.repeat > 1)
    last = max(i for i, o in enumerate(ops) if o.repeat > 1)
    body = [(i, max(1, ops[i].repeat // layers)) for i in range(first, last + 1)]
    return ([(i, 1) for i in range(first)] + body * layers
            + [(i, 1) for i in range(last + 1, len(ops))])


def eager_iteration_s(ops: list[Op], device_s_per_occurrence: list[float], host_per_kernel_s: float) -> float:
    """An eager iteration of `ops`: each occurrence of op i issues ops[i].kernels kernels at
    `host_per_kernel_s` each and keeps the device busy device_s_per_occurrence[i] seconds, spread
    evenly over its kernels."""
    order = occurrence_order(ops)
    index = np.repeat([i for i, _ in order], [t for _, t in order])
    kernels = np.maximum(np.array([o.kernels for o in ops]), 1)[index]
    per_kernel = (np.asarray(device_s_per_occurrence, float)[index] / kernels)
    device = np.repeat(per_kernel, kernels)
    return pipelined_s(np.full(device.size, host_per_kernel_s), device)
