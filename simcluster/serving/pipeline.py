"""Pipeline: the stages of a PP replica as a chain of FIFO servers shared by its in-flight batches.

A batch enters stage s when it has left stage s-1 and the batch before it has left stage s, so
up to pp batches are in flight, throughput is bounded by the slowest stage and one batch's latency
is the sum of its stage times (sends included in each stage's ops) plus any wait for a busy stage.
This is the recurrence of a tandem queue with FIFO order (e.g. GPipe/vLLM virtual engines).
"""

from __future__ import annotations


class Pipeline:
    """Per-stage time at which each stage becomes free, s."""

    def __init__(self, stages: int):
        self.free_s = [0.0] * stages

    def run(self, start_s: float, stage_times_s) -> float:
        """Push one batch entering at start_s through the stages; returns when it leaves the last."""
        free = self.free_s
        t = start_s
        for s, d in enumerate(stage_times_s):
            if free[s] > t:
                t = free[s]
            t += d
            free[s] = t
        return t
