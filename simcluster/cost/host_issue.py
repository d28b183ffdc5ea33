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

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from simcluster.llm.ops import PLAIN_TORCH, Batch, Op, forward_ops

# The host probe of a model's eager rows: one sequence decoding at context 512, where the device
# has almost nothing to do and the row times the framework's host.
FORWARD_PROBE = {"phase": "decode", "batch": 1, "context_len": 512}
# Op kinds the whole-model benchmark does not run: it returns logits and never samples.
NOT_IN_FORWARD_BENCHMARK = ("sampling",)


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


def is_forward_probe(row) -> bool:
    """Whether a model_forward.csv row is its model's eager host probe (a fit row, never scored)."""
    return (row.mode == "eager" and row.phase == FORWARD_PROBE["phase"]
            and int(row.batch) == FORWARD_PROBE["batch"] and int(row.context_len) == FORWARD_PROBE["context_len"])


def forward_ops_of(spec, row) -> list[Op]:
    """The ops of a model_forward.csv row as the plain-torch benchmark runs them (llm.ops.PLAIN_TORCH:
    separate q/k/v and gate/up GEMMs, rotate-half RoPE, K/V-cache writes in decode, attention through
    SDPA's default dispatch; its prefill keeps no cache and returns logits without sampling)."""
    batch = (Batch(prefill=((int(row.seq_len), 0),) * int(row.batch)) if row.phase == "prefill"
             else Batch(decode=(int(row.context_len),) * int(row.batch)))
    impl = replace(PLAIN_TORCH, kv_cache_write=row.phase == "decode")
    return [o for o in forward_ops(spec, batch, impl=impl) if o.kind not in NOT_IN_FORWARD_BENCHMARK]


def catalog_specs(names) -> dict:
    """{name: LlmSpec, or None for a name the catalog does not hold} of the distinct `names`."""
    from simcluster.catalog import CatalogError
    from simcluster.llm.spec import load_llm
    specs = {}
    for name in dict.fromkeys(names):
        try:
            specs[name] = load_llm(name)
        except CatalogError:
            specs[name] = None
    return specs


def host_per_kernel(frame: pd.DataFrame, specs: dict) -> dict[str, float]:
    """{model: host seconds per listed kernel}: each model's host probe (host_s, the time the host
    took to issue the call) over the kernels its op list holds. The probe is timed interleaved with
    the model's other rows, so it saw the same host (calibrate/model_forward.py)."""
    out = {}
    for r in frame.itertuples():
        spec = specs.get(r.model)
        host_s = pd.to_numeric(getattr(r, "host_s", None), errors="coerce")
        if spec is None or not is_forward_probe(r) or pd.isna(host_s):
            continue
        kernels = sum(o.kernels * o.repeat for o in forward_ops_of(spec, r))
        out[r.model] = float(host_s) / kernels
    return out


def measured_host_per_kernel_s(gpu: str, folder: Path | None = None) -> float | None:
    """The median over models of host_per_kernel in profiles/measured/<gpu>/model_forward.csv:
    what the calibration host's PyTorch spent issuing one listed kernel of an eager forward.
    None where that GPU has no probed forwards."""
    from simcluster.cost.tables import load_tables
    try:
        frame = load_tables(gpu, folder).get("model_forward.csv")
    except (OSError, ValueError):
        return None
    if frame is None:
        return None
    rates = host_per_kernel(frame, catalog_specs(frame["model"]))
    return float(np.median(list(rates.values()))) if rates else None
