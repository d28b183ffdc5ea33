"""The clocks of the overlap section (calibrate/overlap.py): CUDA events with the collectives on a
side stream (GpuClock), or the host clock where gloo runs async collectives on its own threads
(HostClock); window_stats reads the collective calls that ran beside a compute loop."""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from calibrate.overlap import Collective, Compute


def window_stats(start_s: float, end_s: float, marks_s: list[float]) -> tuple[float, float]:
    """Collective calls j = marks_s[j]..marks_s[j+1] beside a compute loop start_s..end_s (one
    clock): the mean seconds of the calls wholly inside the loop (of all calls if none is), and
    the share of the loop some call covered."""
    spans = list(zip(marks_s, marks_s[1:]))
    inside = [b - a for a, b in spans if a >= start_s and b <= end_s]
    per_call = statistics.fmean(inside or [b - a for a, b in spans])
    covered = max(0.0, min(end_s, marks_s[-1]) - max(start_s, marks_s[0]))
    return per_call, min(1.0, covered / max(end_s - start_s, 1e-12))


class GpuClock:
    """CUDA events; the collectives on one side stream, the compute on the current stream."""

    def __init__(self, device):
        self.device = device
        self.stream = torch.cuda.Stream(device)

    @staticmethod
    def _event():
        return torch.cuda.Event(enable_timing=True)

    def compute_s(self, compute: Compute) -> float:
        """Seconds of one compute loop alone."""
        start, end = self._event(), self._event()
        start.record()
        compute.run()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3

    def comm_s(self, coll: Collective, n: int) -> float:
        """Seconds per call of `n` collectives back to back on the side stream, alone."""
        current = torch.cuda.current_stream(self.device)
        start, end = self._event(), self._event()
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            start.record()
            for _ in range(n):
                coll.issue()
            end.record()
        current.wait_stream(self.stream)
        torch.cuda.synchronize(self.device)
        return start.elapsed_time(end) * 1e-3 / n

    def concurrent(self, compute: Compute, coll: Collective, n_comm: int, lead: int):
        """(compute loop seconds, seconds per collective inside it, share of it covered)."""
        current = torch.cuda.current_stream(self.device)
        ref, k0, k1 = self._event(), self._event(), self._event()
        marks = [self._event() for _ in range(n_comm + 1)]
        ref.record(current)             # every later event is after ref on the GPU
        self.stream.wait_stream(current)
        issued = [0]

        def issue_to(target: int) -> None:
            if target <= issued[0]:
                return
            with torch.cuda.stream(self.stream):
                while issued[0] < target:
                    coll.issue()
                    issued[0] += 1
                    marks[issued[0]].record()

        with torch.cuda.stream(self.stream):
            marks[0].record()
        issue_to(lead)
        k0.record(current)
        compute.run(hook=lambda i: issue_to(lead + (n_comm - lead) * i // compute.n))
        k1.record(current)
        issue_to(n_comm)
        current.wait_stream(self.stream)
        torch.cuda.synchronize(self.device)
        at = [ref.elapsed_time(m) * 1e-3 for m in marks]
        start_s, end_s = ref.elapsed_time(k0) * 1e-3, ref.elapsed_time(k1) * 1e-3
        return (end_s - start_s, *window_stats(start_s, end_s, at))


class HostClock:
    """Host clock on a CPU: gloo runs the async collectives on its own threads."""

    def compute_s(self, compute: Compute) -> float:
        t0 = time.perf_counter()
        compute.run()
        return max(time.perf_counter() - t0, 1e-9)

    def comm_s(self, coll: Collective, n: int) -> float:
        t0 = time.perf_counter()
        for work in [coll.issue(async_op=True) for _ in range(n)]:
            work.wait()
        return max(time.perf_counter() - t0, 1e-9) / n

    def concurrent(self, compute: Compute, coll: Collective, n_comm: int, lead: int):
        works, marks = [], [time.perf_counter()]

        def poll() -> None:        # a call's end is when the host first sees it completed
            while len(marks) <= len(works) and works[len(marks) - 1].is_completed():
                marks.append(time.perf_counter())

        def issue_to(target: int) -> None:
            poll()
            while len(works) < target:
                works.append(coll.issue(async_op=True))

        issue_to(lead)
        t0 = time.perf_counter()
        compute.run(hook=lambda i: issue_to(lead + (n_comm - lead) * i // compute.n))
        t1 = time.perf_counter()
        issue_to(n_comm)
        for work in works[len(marks) - 1:]:
            work.wait()
            marks.append(time.perf_counter())
        return (max(t1 - t0, 1e-9), *window_stats(t0, t1, marks))
