"""How one kernel (or a short sequence of kernels) is timed.

On a GPU: CUDA events around a batch of calls, after warm-up; the median over repeated batches.
Each call `fn(i)` reads input set `i mod n` of several rotated copies, so small operands do not
sit in L2 between calls (an L2-resident weight would flatter the GEMM).  Where the calls can be
captured in a CUDA graph the batch is replayed as one graph, which removes the host's launch gaps
and leaves the GPU time of the kernels themselves.  On a CPU (smoke mode) the same calls are timed
with the host clock.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import torch


def rotation_count(set_bytes: int, l2_bytes: int, max_sets: int = 64) -> int:
    """Copies of an input set needed so consecutive reuse of one copy spans > 2x L2."""
    if set_bytes <= 0:
        return 1
    return max(1, min(max_sets, math.ceil(2 * l2_bytes / set_bytes) + 1))


@dataclass
class Timer:
    """Times callables on one device; knobs sized for the full sweep or the CPU smoke run."""

    device: torch.device
    smoke: bool = False
    l2_bytes: int = 50 * 2**20
    batch_target_s: float = 2e-3      # one timed batch of calls lasts about this long
    point_target_s: float = 0.04      # all timed batches of one point together
    min_reps: int = 5
    max_reps: int = 50
    max_inner: int = 64
    graph_failures: list = field(default_factory=list)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)

    def measure(self, fn, n_sets: int = 1, use_graph: bool = True) -> tuple[float, str]:
        """Median seconds per call of `fn(i)`, and the method used ('graph', 'eager', 'host')."""
        if not self.is_cuda:
            return self._measure_host(fn, n_sets), "host"
        est = self._estimate(fn, n_sets)
        inner = max(1, min(self.max_inner, int(self.batch_target_s / max(est, 1e-7))))
        # A captured graph replays calls 0..inner-1 only: cover every rotated set, or the
        # reuse distance shrinks to inner sets and small operands stay in L2.
        inner = max(inner, n_sets)
        reps = int(self.point_target_s / max(est * inner, 1e-7))
        reps = max(self.min_reps, min(self.max_reps, reps))
        if est * inner > 0.1:       # slow kernels vary little; three batches suffice
            reps = 3
        if use_graph:
            graph = self._capture(fn, n_sets, inner)
            if graph is not None:
                return self._replay(lambda: graph.replay(), inner, reps), "graph"
        counter = [0]

        def batch():
            for _ in range(inner):
                fn(counter[0] % n_sets)
                counter[0] += 1
        return self._replay(batch, inner, reps), "eager"

    def _estimate(self, fn, n_sets: int) -> float:
        fn(0)                       # warm-up: handles, autotuning, allocator
        self.sync()
        calls = 2
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(1, calls + 1):
            fn(i % n_sets)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3 / calls

    def _capture(self, fn, n_sets: int, inner: int):
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(side):   # warm-up on the capture stream, as torch advises
                fn(0)
            torch.cuda.current_stream(self.device).wait_stream(side)
            self.sync()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                for i in range(inner):
                    fn(i % n_sets)
            graph.replay()
            self.sync()
            return graph
        except Exception as exc:  # some ops (host syncs, dynamic shapes) cannot be captured
            self.graph_failures.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            self.sync()
            return None

    def _replay(self, batch, inner: int, reps: int) -> float:
        batch()                      # one untimed batch after capture / before timing
        events = []
        for _ in range(reps):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            batch()
            end.record()
            events.append((start, end))
        self.sync()
        per_call = [s.elapsed_time(e) * 1e-3 / inner for s, e in events]
        return statistics.median(per_call)

    def _measure_host(self, fn, n_sets: int) -> float:
        fn(0)
        times = []
        for r in range(3):
            t0 = time.perf_counter()
            fn(r % n_sets)
            times.append(time.perf_counter() - t0)
        return max(statistics.median(times), 1e-9)

    def wall(self, fn, reps: int = 7) -> float:
        """Median host-clock seconds of `fn()` including a device sync: what a caller waits."""
        fn()
        self.sync()
        times = []
        for _ in range(2 if self.smoke else reps):
            self.sync()
            t0 = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        return max(statistics.median(times), 1e-9)


class RandomPool:
    """One large buffer of random values; operands are aligned views into it.

    Taking views avoids allocating a fresh copy of every operand for every shape.  The operands
    of one set (and consecutive sets) are laid out one after another, never overlapping: a
    kernel reading two overlapping operands would find one in L2 after reading the other.  A
    set larger than the pool gets freshly allocated random tensors instead.
    """

    def __init__(self, device: torch.device, n_elements: int, seed: int = 0):
        self._gen = torch.Generator(device=device)
        self._gen.manual_seed(seed)
        self.device = device
        self._pools = {torch.bfloat16: torch.randn(n_elements, generator=self._gen,
                                                   device=device, dtype=torch.bfloat16)}
        self.n = n_elements

    def _pool(self, dtype):
        if dtype not in self._pools:
            self._pools[dtype] = self._pools[torch.bfloat16].to(dtype)
        return self._pools[dtype]

    def _fresh(self, shape, dtype):
        fresh = torch.randn(shape, generator=self._gen, device=self.device, dtype=torch.bfloat16)
        return fresh if dtype == torch.bfloat16 else fresh.to(dtype)

    def view(self, shape, dtype=torch.bfloat16, start: int = 0):
        """A tensor of `shape` at element `start` of the pool (fresh if it does not fit)."""
        numel = math.prod(shape)
        if start + numel > self.n:
            return self._fresh(shape, dtype)
        return self._pool(dtype)[start:start + numel].view(shape)

    def sets(self, shapes, dtype=torch.bfloat16, n_sets: int = 1):
        """`n_sets` lists of tensors, one per shape; no two tensors overlap unless more sets are
        asked for than the pool holds, and then only tensors of sets far apart in the list."""
        sizes = [_aligned(math.prod(shape)) for shape in shapes]
        total = sum(sizes)
        if total > self.n:
            return [[self._fresh(shape, dtype) for shape in shapes] for _ in range(n_sets)]
        out, cursor = [], 0
        for _ in range(n_sets):
            if cursor + total > self.n:
                cursor = 0
            views = []
            for shape, size in zip(shapes, sizes):
                views.append(self.view(shape, dtype, cursor))
                cursor += size
            out.append(views)
        return out


def _aligned(numel: int) -> int:
    """Elements rounded up to 128 (256-byte starts for bf16, as cuBLAS and SDPA prefer)."""
    return -(-numel // 128) * 128
