"""Copies between host and device memory (h2d, d2h; pinned and pageable host buffers) and within
the device (d2d).  `bytes_per_s` counts the bytes copied once (not read plus written)."""

from __future__ import annotations

import torch

from calibrate.context import BenchContext
from calibrate.shapes import memcpy_sizes


def run(ctx: BenchContext) -> None:
    sizes = memcpy_sizes(ctx.smoke)
    top = max(sizes)
    device_src = ctx.pool.view((top // 2,)).view(torch.uint8)
    device_dst = torch.empty(top, dtype=torch.uint8, device=ctx.device)
    cuda = ctx.device.type == "cuda"
    hosts = {False: device_src.cpu().clone()}
    if cuda:
        hosts[True] = hosts[False].pin_memory()
    host_dst = {p: torch.empty(h.shape, dtype=h.dtype, pin_memory=p) for p, h in hosts.items()}
    with ctx.table("memcpy.csv") as out:
        for size in sizes:
            if ctx.expired():
                ctx.skipped += 1
                continue
            cases = [("d2d", False, device_dst[:size], device_src[:size])]
            if cuda:
                for pinned in (True, False):
                    cases.append(("h2d", pinned, device_dst[:size], hosts[pinned][:size]))
                    cases.append(("d2h", pinned, host_dst[pinned][:size], device_src[:size]))
            for direction, pinned, dst, src in cases:
                t, _ = ctx.timer.measure(lambda i: dst.copy_(src, non_blocking=pinned), 1,
                                         use_graph=False)
                out.add(direction=direction, pinned=pinned, bytes=size, time_s=t,
                        bytes_per_s=size / t)
    if not cuda:
        ctx.note("memcpy: no CUDA device, only d2d (host memory) measured")
    if ctx.skipped:
        ctx.note(f"memcpy: time budget ran out, {ctx.skipped} sizes not measured")
