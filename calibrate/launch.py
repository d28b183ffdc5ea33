"""Kernel launch overhead: a chain of n tiny dependent kernels, launched eagerly from Python or
replayed as one CUDA graph.  Host clock around launch and synchronize: what a caller waits."""

from __future__ import annotations

import torch

from calibrate.context import BenchContext
from calibrate.shapes import launch_points


def chain(x, n: int) -> None:
    """n in-place adds on a one-element tensor: each kernel does almost no work."""
    for _ in range(n):
        x.add_(1.0)


def run(ctx: BenchContext) -> None:
    x = torch.zeros(1, device=ctx.device)
    with ctx.table("launch.csv") as out:
        for n in launch_points(ctx.smoke):
            t = ctx.timer.wall(lambda: chain(x, n), reps=15)
            out.add(mode="eager", n_kernels=n, time_s=t, time_per_kernel_s=t / n)
            if ctx.device.type != "cuda":
                continue
            graph = torch.cuda.CUDAGraph()
            side = torch.cuda.Stream(ctx.device)
            side.wait_stream(torch.cuda.current_stream(ctx.device))
            with torch.cuda.stream(side):
                chain(x, 1)
            torch.cuda.current_stream(ctx.device).wait_stream(side)
            with torch.cuda.graph(graph):
                chain(x, n)
            t = ctx.timer.wall(graph.replay, reps=15)
            out.add(mode="cuda_graph", n_kernels=n, time_s=t, time_per_kernel_s=t / n)
    ctx.note("launch: host clock from first launch to synchronize returning, median of 15")
