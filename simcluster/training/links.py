"""A link shared by concurrent transfers: processor sharing (a fluid model).

Each transfer carries `work_s`, the seconds it would take alone on the link (its alpha-beta
time). While n transfers are active each progresses at rate 1/n, so two equal collectives launched
together both finish after twice their solo time — how NCCL channels on one NIC or NVLink port
split bandwidth to first order. Completion times are recomputed whenever a transfer starts or ends.
"""

from __future__ import annotations

import simpy

_EPS_S = 1e-15


class SharedLink:
    """One direction of one GPU's link (its NVLink port or its NIC rail) in a SimPy environment."""

    def __init__(self, env: simpy.Environment, name: str):
        self.env = env
        self.name = name
        self._flows: dict[int, list] = {}     # id -> [remaining work_s, done event, start_s, label]
        self._next_id = 0
        self._last_s = 0.0
        self._version = 0
        self.intervals: list[tuple[float, float, str]] = []   # (start_s, end_s, label) of finished transfers
        self.busy_s = 0.0
        self.fifo_free_s = 0.0      # when first-come-first-served sends (no shared flows) free the link

    @property
    def active(self) -> bool:
        """Whether shared transfers are in flight."""
        return bool(self._flows)

    def transfer(self, work_s: float, label: str = "") -> simpy.Event:
        """An event that fires when `work_s` seconds of solo link time have been served."""
        done = self.env.event()
        if work_s <= 0:
            done.succeed()
            return done
        self._advance()
        self._flows[self._next_id] = [work_s, done, self.env.now, label]
        self._next_id += 1
        self._reschedule()
        return done

    def _advance(self) -> None:
        now = self.env.now
        if self._flows and now > self._last_s:
            share = (now - self._last_s) / len(self._flows)
            for f in self._flows.values():
                f[0] -= share
            self.busy_s += now - self._last_s
        self._last_s = now

    def _reschedule(self) -> None:
        self._version += 1
        if not self._flows:
            return
        version = self._version
        wait = max(0.0, min(f[0] for f in self._flows.values()) * len(self._flows))
        self.env.timeout(wait).callbacks.append(lambda _: self._on_timer(version))

    def _on_timer(self, version: int) -> None:
        if version != self._version:
            return  # a transfer started or ended since this timer was set
        self._advance()
        finished = [k for k, f in self._flows.items() if f[0] <= _EPS_S * max(1.0, abs(self.env.now))]
        for k in finished:
            work, done, start, label = self._flows.pop(k)
            self.intervals.append((start, self.env.now, label))
            done.succeed()
        self._reschedule()
