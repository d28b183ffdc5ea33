"""Collectives and point-to-point transfers through torch.distributed (NCCL on GPUs).

Conventions follow nccl-tests (NVIDIA, doc/PERFORMANCE.md): `bytes` is the all-reduce and
broadcast buffer, the all-gather output, the reduce-scatter input, the all-to-all buffer and the
send/recv message; algbw = bytes / time; busbw = algbw x a factor that makes it comparable to
link bandwidth.  Every rank times the same number of calls (the batch size is agreed first, or
ranks would wait on each other forever); the reported time is the slowest rank's median.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.distributed as dist

from calibrate.context import BenchContext
from calibrate.shapes import collective_sizes

OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "send_recv")
DTYPE = torch.bfloat16


def bus_factor(op: str, world: int) -> float:
    """busbw / algbw per nccl-tests PERFORMANCE.md: ring all-reduce moves 2(n-1)/n of the
    buffer per rank, all-gather/reduce-scatter/all-to-all (n-1)/n, broadcast and send/recv 1."""
    if op == "all_reduce":
        return 2 * (world - 1) / world
    if op in ("all_gather", "reduce_scatter", "all_to_all"):
        return (world - 1) / world
    return 1.0


def op_call(op: str, n_bytes: int, device, rank: int, world: int, pair=None):
    """fn() running one collective of `n_bytes` total (see module doc), or a no-op for ranks
    outside a send/recv pair."""
    elem = torch.tensor([], dtype=DTYPE).element_size()
    n = max(world, n_bytes // elem // world * world)
    buf = torch.randn(n, device=device).to(DTYPE)
    if op == "all_reduce":
        return lambda: dist.all_reduce(buf)
    if op == "broadcast":
        return lambda: dist.broadcast(buf, src=0)
    if op == "all_gather":
        out = torch.empty(n, device=device, dtype=DTYPE)
        shard = buf[: n // world]
        return lambda: dist.all_gather_into_tensor(out, shard)
    if op == "reduce_scatter":
        out = torch.empty(n // world, device=device, dtype=DTYPE)
        return lambda: dist.reduce_scatter_tensor(out, buf)
    if op == "all_to_all":
        out = torch.empty_like(buf)
        return lambda: dist.all_to_all_single(out, buf)
    if op == "send_recv":
        src, dst = pair
        if rank == src:
            return lambda: dist.send(buf, dst)
        if rank == dst:
            return lambda: dist.recv(buf, src)
        return lambda: None
    raise ValueError(f"collectives: unknown op {op!r}")


def _agree_max(value: float, device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _timed_batch(fn, inner: int, device) -> float:
    """Seconds per call over one batch of `inner` calls."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3 / inner
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def measure_collective(fn, device, smoke: bool) -> float:
    """Slowest rank's median seconds per call; batch size and count agreed over ranks."""
    fn()
    dist.barrier()
    est = _agree_max(_timed_batch(fn, 2, device), device)
    inner = max(1, min(20, int(2e-3 / max(est, 1e-7))))
    reps = 3 if smoke or est * inner > 0.05 else max(5, min(20, int(0.05 / (est * inner))))
    times = []
    for _ in range(reps):
        dist.barrier()
        times.append(_timed_batch(fn, inner, device))
    return _agree_max(statistics.median(times), device)


def send_recv_pairs(world: int) -> list[tuple[int, int]]:
    """Every unordered rank pair once, lower rank sending."""
    return [(a, b) for a in range(world) for b in range(a + 1, world)]


def run(ctx: BenchContext) -> None:
    rank, world, device = dist.get_rank(), dist.get_world_size(), ctx.device
    dtype_name = str(DTYPE).replace("torch.", "")
    with ctx.table("collectives.csv") as out:
        for op in OPS:
            pairs = send_recv_pairs(world) if op == "send_recv" else [None]
            for pair in pairs:
                for size in collective_sizes(ctx.smoke):
                    if ctx.expired():
                        ctx.skipped += 1
                        continue
                    try:
                        fn = op_call(op, size, device, rank, world, pair)
                        t = measure_collective(fn, device, ctx.smoke)
                    except Exception as exc:   # same failure on every rank (e.g. gloo lacks op)
                        ctx.note(f"collectives {op}: {type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0][:120]}")
                        break
                    out.add(op=op, world_size=world, bytes=size, dtype=dtype_name, time_s=t,
                            algbw_bytes_per_s=size / t,
                            busbw_bytes_per_s=size / t * bus_factor(op, world),
                            src="" if pair is None else pair[0],
                            dst="" if pair is None else pair[1])
    if ctx.skipped:
        ctx.note(f"collectives ws={world}: time budget ran out, {ctx.skipped} points skipped")


def run_p2p_copy(ctx: BenchContext, devices: list) -> None:
    """copy_ between every ordered pair of devices from one process (NVLink or PCIe peer path)."""
    with ctx.table("p2p_bandwidth.csv") as out:
        for si, src_dev in enumerate(devices):
            for di, dst_dev in enumerate(devices):
                if si == di:
                    continue
                for size in collective_sizes(ctx.smoke):
                    if ctx.expired():
                        ctx.skipped += 1
                        continue
                    src = torch.randint(0, 255, (size,), dtype=torch.uint8, device=src_dev)
                    dst = torch.empty(size, dtype=torch.uint8, device=dst_dev)
                    t = ctx.timer.wall(lambda: _copies(dst, src, 1), reps=3)
                    inner = max(1, min(100, int(5e-3 / t)))
                    t = ctx.timer.wall(lambda: _copies(dst, src, inner), reps=5) / inner
                    out.add(src=si, dst=di, bytes=size, time_s=t, bytes_per_s=size / t,
                            method="copy_")
                    del src, dst


def _copies(dst, src, n: int) -> None:
    for _ in range(n):
        dst.copy_(src, non_blocking=True)
    for dev in {dst.device, src.device}:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
