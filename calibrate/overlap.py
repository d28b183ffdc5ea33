"""Compute slowed by a collective on the same GPU: the overlap slowdown of data parallelism.

DDP overlaps its gradient all-reduces with the backward pass, FSDP its all-gathers and
reduce-scatters with compute; the collective's kernels then take SMs and HBM bandwidth from the
compute kernels running beside them.  simcluster's training replay stretches an iteration by
κ × (the time compute overlapped a data-parallel collective) (`overlap_slowdown`, a first-order
interference model); this section measures κ for the kernels of a Llama-3.2-1B/3B backward at
2 x 2048 tokens.

A point is one compute workload (a bf16 GEMM, an elementwise `addcmul`, or a GEMM-addcmul-GEMM
"layer mix") and one collective.  The compute runs on the default stream as a loop of launches of
about 20 ms, replayed as one CUDA graph where capture works (so neither the host's launch gaps nor
its issuing of the collectives take anything from it); operand sets rotate so L2 does not hold
them.  The collectives run back to back on a second stream created once: enough calls (agreed over
ranks, or NCCL would wait forever) to cover the loop twice, the first few issued before it.  Each of
5 repeats times the loop alone, the loop beside the collectives and the collectives alone; a
figure is the slowest rank's median.  The collective's concurrent time is the mean of the calls
that ran wholly inside the loop.  slowdown = concurrent_s / alone_s - 1 is κ where the
collectives covered the whole loop (overlap_fraction = 1).

Without CUDA (smoke runs on gloo) the collectives are issued asynchronously, gloo's threads run them
beside the host's compute, and the host clock times everything: a check of the code path only.
"""

from __future__ import annotations

import math
import statistics

import torch
import torch.distributed as dist

from calibrate.context import BenchContext
from calibrate.overlap_clock import GpuClock, HostClock
from calibrate.step_timing import agree_ok, cleanup, max_over_ranks, sync
from calibrate.timing import rotation_count

MIB = 2**20
DTYPE = torch.bfloat16
# 2 sequences x 2048 tokens: train_step.csv's GPU-bound Llama-3.2-3B point.
TOKENS = 4096
# (n, k) of Llama-3.2-1B (hidden 2048, MLP 8192): q/o_proj, gate/up, down; and the 3B down
# projection (hidden 3072).  Forward layouts; a backward's dX and dW GEMMs do the same FLOPs.
GEMM_NK = ((2048, 2048), (8192, 2048), (2048, 8192), (3072, 8192))
REPEATS = 5
LOOP_S = 0.02               # one timed compute loop
COMM_COVER = 2.0            # the collectives last this many compute loops
LEAD_CALLS = 8              # collectives issued before the compute loop starts
MIN_LAUNCHES, MAX_LAUNCHES = 20, 2000
MAX_COMM_CALLS = 1024       # bounds the host's queue of collectives and timing events
ESTIMATE_CALLS = 3


def workload_points(smoke: bool) -> list[tuple[str, tuple[int, ...]]]:
    """(workload, dims): gemm (m, n, k), elementwise (rows, cols), layer_mix (m, hidden, ffn)."""
    if smoke:
        return [("gemm", (32, 64, 64)), ("elementwise", (32, 128)), ("layer_mix", (32, 64, 128))]
    return ([("gemm", (TOKENS, n, k)) for n, k in GEMM_NK] +
            [("elementwise", (TOKENS, 8192)),        # a 64 MiB bf16 MLP activation
             ("layer_mix", (TOKENS, 2048, 8192))])   # 1B MLP: gate/up GEMM, addcmul, down GEMM


def collective_points(smoke: bool) -> list[tuple[str, torch.dtype, int]]:
    """(op, dtype, bytes): bytes is the all-reduce buffer, the all-gather output and the
    reduce-scatter input (nccl-tests' convention, as in collectives.py)."""
    if smoke:
        return [(op, dtype, 64 * 1024) for op, dtype, _ in collective_points(False)]
    return [("all_reduce", torch.float32, 256 * MIB),      # a large DDP bucket, fp32 gradients
            ("all_reduce", torch.float32, 25 * MIB),       # DDP's default bucket_cap_mb
            ("all_gather", torch.bfloat16, 64 * MIB),      # FSDP parameter gather, bf16
            ("reduce_scatter", torch.float32, 64 * MIB)]   # FSDP gradient reduce, fp32


def shape_name(dims: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in dims)


def build_launch(ctx: BenchContext, workload: str, dims: tuple[int, ...]):
    """fn(i) launching the workload once on input set i mod (rotated sets); outputs are
    preallocated so a launch allocates nothing (and can be captured in a graph)."""
    device = ctx.device

    def sets(shapes):
        size = sum(math.prod(s) for s in shapes) * torch.tensor([], dtype=DTYPE).element_size()
        return ctx.pool.sets(shapes, DTYPE, rotation_count(size, ctx.timer.l2_bytes, 8))

    def empty(*shape):
        return torch.empty(shape, device=device, dtype=DTYPE)

    if workload == "gemm":
        m, n, k = dims
        ins, out = sets([(m, k), (n, k)]), empty(m, n)

        def launch(i):
            x, w = ins[i % len(ins)]
            torch.mm(x, w.t(), out=out)
        return launch
    if workload == "elementwise":
        ins, out = sets([dims, dims, dims]), empty(*dims)

        def launch(i):
            a, b, c = ins[i % len(ins)]
            torch.addcmul(c, a, b, out=out)
        return launch
    if workload == "layer_mix":
        m, hidden, ffn = dims
        ins = sets([(m, hidden), (ffn, hidden), (hidden, ffn), (m, ffn), (m, ffn)])
        up, act, down = empty(m, ffn), empty(m, ffn), empty(m, hidden)

        def launch(i):
            x, w_up, w_down, b, c = ins[i % len(ins)]
            torch.mm(x, w_up.t(), out=up)
            torch.addcmul(c, up, b, out=act)
            torch.mm(act, w_down.t(), out=down)
        return launch
    raise ValueError(f"overlap: unknown workload {workload!r}")


class Collective:
    """One collective of `n_bytes` on buffers allocated once; `issue()` runs it on the current
    stream (NCCL) or returns gloo's work handle (async_op).  All-reduced values grow with every
    call (inf, then nan): reduction speed does not depend on the values."""

    def __init__(self, op: str, dtype: torch.dtype, n_bytes: int, device, world: int):
        itemsize = torch.tensor([], dtype=dtype).element_size()
        n = max(world, n_bytes // itemsize // world * world)
        self.op, self.dtype, self.message_bytes = op, dtype, n * itemsize
        gen = torch.Generator(device=device).manual_seed(1)
        full = torch.randn(n, generator=gen, device=device, dtype=torch.float32).to(dtype)
        if op == "all_reduce":
            self._fn = lambda async_op: dist.all_reduce(full, async_op=async_op)
        elif op == "all_gather":
            shard = full[: n // world].clone()
            self._fn = lambda async_op: dist.all_gather_into_tensor(full, shard,
                                                                    async_op=async_op)
        elif op == "reduce_scatter":
            shard = torch.empty(n // world, device=device, dtype=dtype)
            self._fn = lambda async_op: dist.reduce_scatter_tensor(shard, full,
                                                                   async_op=async_op)
        else:
            raise ValueError(f"overlap: unknown collective {op!r}")

    def issue(self, async_op: bool = False):
        return self._fn(async_op)


class Compute:
    """`n` launches of a workload on the current stream: one CUDA graph replay where the launches
    can be captured, else eager launches with `hook(i)` called before launch i."""

    def __init__(self, launch, n: int, device, capture: bool):
        self.launch, self.n, self.graph = launch, n, None
        if capture and device.type == "cuda":
            self.graph = _capture(launch, n, device)

    @property
    def timing(self) -> str:
        return "graph" if self.graph is not None else "eager"

    def run(self, hook=None) -> None:
        if self.graph is not None:
            self.graph.replay()
            return
        for i in range(self.n):
            if hook is not None:
                hook(i)
            self.launch(i)


def _capture(launch, n: int, device):
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    try:
        with torch.cuda.stream(side):       # warm-up on the capture stream, as torch advises
            launch(0)
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.synchronize(device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(n):
                launch(i)
        graph.replay()
        torch.cuda.synchronize(device)
        return graph
    except Exception:           # capture is an optimisation; eager launches time the same kernels
        torch.cuda.synchronize(device)
        return None


def _error(exc: Exception) -> str:
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


def _prepare_collectives(ctx, clock, world: int) -> list[tuple[Collective, float]]:
    """Collectives every rank could build and run, with their slowest rank's seconds per call."""
    ready = []
    for op, dtype, n_bytes in collective_points(ctx.smoke):
        coll, error = None, ""
        try:
            coll = Collective(op, dtype, n_bytes, ctx.device, world)
        except Exception as exc:        # e.g. out of memory on one rank: all skip it together
            error = _error(exc)
        if not agree_ok(coll is not None, ctx.device):
            ctx.note(f"overlap {op} {n_bytes} B: not built ({error or 'on another rank'})")
            continue
        try:
            clock.comm_s(coll, 1)
            per_call = clock.comm_s(coll, ESTIMATE_CALLS)
        except Exception as exc:        # the same on every rank (e.g. gloo lacks the op)
            ctx.note(f"overlap {op}: {_error(exc)}")
            continue
        ready.append((coll, max_over_ranks(per_call, ctx.device)))
    return ready


def _measure(clock, compute: Compute, coll: Collective, comm_est_s: float, reps: int, device):
    """One point's slowest-rank medians: compute alone and beside the collective (per launch),
    the collective alone and beside the compute (per call), the share of the loop covered."""
    loop_est_s = max_over_ranks(clock.compute_s(compute), device)
    n_comm = int(max_over_ranks(min(MAX_COMM_CALLS, math.ceil(
        COMM_COVER * loop_est_s / comm_est_s) + LEAD_CALLS), device))
    n_alone = max(2, min(n_comm, math.ceil(loop_est_s / comm_est_s)))
    lead = min(LEAD_CALLS, n_comm)
    alone, conc, comm_alone, comm_conc, covered = [], [], [], [], []
    for _ in range(reps):
        dist.barrier()
        alone.append(clock.compute_s(compute) / compute.n)
        dist.barrier()
        loop_s, per_call, share = clock.concurrent(compute, coll, n_comm, lead)
        conc.append(loop_s / compute.n)
        comm_conc.append(per_call)
        covered.append(share)
        dist.barrier()
        comm_alone.append(clock.comm_s(coll, n_alone))
    worst = [max_over_ranks(statistics.median(v), device)
             for v in (alone, conc, comm_alone, comm_conc)]
    share = -max_over_ranks(-min(covered), device)
    return (*worst, share, n_comm)


def run(ctx: BenchContext) -> None:
    if ctx.device.type == "cuda":
        _run(ctx)
        return
    # On a CPU the ranks' intra-op thread pools and gloo's threads would share a few cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(ctx)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: BenchContext) -> None:
    device, world = ctx.device, dist.get_world_size()
    gpu = device.type == "cuda"
    clock = GpuClock(device) if gpu else HostClock()
    reps = 2 if ctx.smoke else REPEATS
    loop_target_s = 2e-3 if ctx.smoke else LOOP_S
    min_launches = 4 if ctx.smoke else MIN_LAUNCHES
    collectives = _prepare_collectives(ctx, clock, world)
    if not collectives:
        ctx.note(f"overlap ws={world}: no collective could run, nothing measured")
        return
    slowdowns: dict[str, list[float]] = {}
    with ctx.table("overlap.csv") as out:
        for workload, dims in workload_points(ctx.smoke):
            if ctx.expired():
                ctx.skipped += len(collectives)
                continue
            launch, per_launch, error = None, None, ""
            try:            # allocation and warm-up: no collective yet, so a failure is agreed
                launch = build_launch(ctx, workload, dims)
                est = Compute(launch, ESTIMATE_CALLS, device, capture=False)
                est.run()
                sync(device)
                per_launch = clock.compute_s(est) / est.n
            except Exception as exc:
                error = _error(exc)
            if not agree_ok(per_launch is not None, device):
                ctx.note(f"overlap {workload} {shape_name(dims)}: skipped "
                         f"({error or 'failed on another rank'})")
                launch = None
                cleanup(device)
                continue
            # The loop outlasts a few collective calls, so some run wholly inside it.
            loop_s = max([loop_target_s] + [4 * c for _, c in collectives])
            n = int(max_over_ranks(min(MAX_LAUNCHES, max(min_launches, math.ceil(
                loop_s / max_over_ranks(per_launch, device)))), device))
            compute = Compute(launch, n, device, capture=True)
            for coll, comm_est_s in collectives:
                if ctx.expired():
                    ctx.skipped += 1
                    continue
                alone, conc, comm_alone, comm_conc, share, n_comm = _measure(
                    clock, compute, coll, comm_est_s, reps, device)
                slowdown = conc / alone - 1
                slowdowns.setdefault(workload, []).append(slowdown)
                out.add(world_size=world, workload=workload, shape=shape_name(dims),
                        collective=coll.op, message_bytes=coll.message_bytes, alone_s=alone,
                        concurrent_s=conc, slowdown=slowdown, comm_alone_s=comm_alone,
                        comm_concurrent_s=comm_conc, time_s=conc,
                        comm_dtype=str(coll.dtype).replace("torch.", ""),
                        overlap_fraction=share, launches=n, comm_calls=n_comm,
                        timing=compute.timing if gpu else "host")
            launch = compute = None
            cleanup(device)
    spread = "; ".join(f"{w} {min(s):+.3f}..{max(s):+.3f}" for w, s in slowdowns.items())
    ctx.note(f"overlap ws={world}: bf16 compute loops (~{loop_target_s * 1e3:.0f} ms, "
             f"{'CUDA graph replay on the default stream' if gpu else 'host clock'}) beside "
             f"back-to-back collectives ({'one side CUDA stream' if gpu else 'gloo async'}, "
             f"covering {COMM_COVER:g} loops), median of {reps} repeats, slowest rank; "
             f"slowdown by workload: {spread or 'none measured'}")
    if ctx.skipped:
        ctx.note(f"overlap ws={world}: time budget ran out, {ctx.skipped} points skipped")
