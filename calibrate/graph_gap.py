"""The device's idle time between consecutive kernels of a CUDA-graph replay.

Kernel tables give each kernel's duration; a replayed graph of a model step also leaves the GPU
idle between one kernel's end and the next one's start (the graph executor's dispatch of the next
node). Here chains of kernels shaped like a decode layer's (a batch-8 projection, RMSNorm, SiLU,
multiply, residual add) and of the smallest elementwise kernels are captured in one graph each and
replayed under the profiler: time_s is the span of one replay, kernel_s its summed kernel
durations, gap_per_kernel_s = (time_s - kernel_s) / (kernels - 1), the replay with the median gap of
REPLAYS kept. No model step is timed here: the whole-model decode rows stay held out.
"""

from __future__ import annotations

import json
import os
import tempfile

import torch
import torch.nn.functional as F

from calibrate.context import BenchContext
from calibrate.kernel_switch import small_ops

HIDDEN = 4096
BATCH = 8
ROUNDS = 40          # rounds of each chain's ops in one graph
REPLAYS = 3          # profiled replays; the median gap is kept


def layer_ops(device):
    """One decode-layer-like round on (BATCH, HIDDEN) bf16: projection, norm, SiLU, mul, add."""
    w = torch.randn(HIDDEN, HIDDEN, device=device, dtype=torch.bfloat16) * 0.01
    g = torch.ones(HIDDEN, device=device, dtype=torch.bfloat16)
    return [lambda x: x @ w, lambda x: F.rms_norm(x, (HIDDEN,), g, 1e-5), F.silu,
            lambda x: x * 0.5, lambda x: x + 1.0]


def _kernel_spans(events: list) -> list[tuple[float, float]]:
    return sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0))) for e in events
                  if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"))


def replay_gap(graph, device) -> tuple[float, float, int]:
    """(span seconds, summed kernel seconds, kernels) of one profiled replay."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        graph.replay()
        torch.cuda.synchronize(device)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "gap.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            spans = _kernel_spans(json.load(f).get("traceEvents", []))
    if not spans:
        return 0.0, 0.0, 0
    return (spans[-1][1] - spans[0][0]) * 1e-6, sum(b - a for a, b in spans) * 1e-6, len(spans)


def run(ctx: BenchContext) -> None:
    device = ctx.device
    if device.type != "cuda":
        ctx.note("graph_gap: needs a CUDA device (graph replay under the profiler); skipped")
        return
    chains = {"decode_layer": layer_ops(device), "small_elementwise": list(small_ops(device).values())}
    start = torch.randn(BATCH, HIDDEN, device=device, dtype=torch.bfloat16)
    rounds = 4 if ctx.smoke else ROUNDS
    with ctx.table("graph_gap.csv") as out:
        for name, ops in chains.items():
            x0 = start[:1] if name == "small_elementwise" else start
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):           # warm-up on the capture stream
                x = x0
                for op in ops:
                    x = op(x)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                x = x0
                for _ in range(rounds):
                    for op in ops:
                        x = op(x)
            graph.replay()
            results = sorted((r for r in (replay_gap(graph, device) for _ in range(REPLAYS)) if r[2] > 1),
                             key=lambda r: (r[0] - r[1]) / (r[2] - 1))
            if not results:
                continue
            span, kernel, n = results[len(results) // 2]
            out.add(chain=name, n_kernels=n, time_s=span, kernel_s=kernel,
                    gap_per_kernel_s=(span - kernel) / (n - 1))
    ctx.note(f"graph_gap: {rounds} rounds of each chain in one CUDA graph, {REPLAYS} replays under the "
             f"profiler (CUDA activity), gap = (span - summed kernel time) / (kernels - 1), median")
