"""KV-transfer links with bandwidth contention: processor sharing over each link.

Every replica has four links: NVLink out/in (to replicas in its node) and NIC out/in (to other
nodes), each with the bandwidth of all its GPUs together (each TP/PP rank sends its own KV shard
over its own link). A transfer crosses the sender's out-link and the receiver's in-link.

Sharing policy: processor sharing. Each link splits its bandwidth equally among the transfers on
it, and a transfer moves at the smaller of its two links' shares. (Bandwidth a transfer cannot use
because its other link is the bottleneck is not handed to the others: this is not max-min fair,
which would need a water-filling pass per event.) Rates are recomputed whenever a transfer starts
or ends: O(active transfers) per event, one pending timer per network.
"""

from __future__ import annotations


class Link:
    __slots__ = ("name", "bandwidth_bytes_per_s", "active")

    def __init__(self, name: str, bandwidth_bytes_per_s: float):
        if not bandwidth_bytes_per_s > 0:
            raise ValueError(f"link {name}: bandwidth_bytes_per_s is {bandwidth_bytes_per_s!r}; expected > 0")
        self.name, self.bandwidth_bytes_per_s, self.active = name, bandwidth_bytes_per_s, 0


class Transfer:
    __slots__ = ("remaining_bytes", "links", "rate_bytes_per_s", "done", "order")

    def __init__(self, size_bytes: float, links: tuple, done, order: int):
        self.remaining_bytes, self.links, self.done, self.order = size_bytes, links, done, order
        self.rate_bytes_per_s = 0.0


class LinkNetwork:
    """Transfers in flight over shared links; `send` calls `done(now)` when the last byte arrives."""

    def __init__(self, env):
        self.env = env
        self.active: list[Transfer] = []
        self._last_s = 0.0
        self._version = 0
        self._count = 0
        self.bytes_sent = 0.0

    def send(self, links: tuple, size_bytes: float, latency_s: float, done) -> None:
        """Start a transfer of size_bytes over `links` after latency_s of setup/propagation."""
        self._count += 1
        tr = Transfer(float(size_bytes), tuple(links), done, self._count)
        self.bytes_sent += size_bytes
        if latency_s > 0:
            self.env.timeout(latency_s).callbacks.append(lambda _e: self._start(tr))
        else:
            self._start(tr)

    def _advance(self) -> None:
        now = self.env.now
        dt = now - self._last_s
        if dt > 0:
            for tr in self.active:
                tr.remaining_bytes -= tr.rate_bytes_per_s * dt
        self._last_s = now

    def _start(self, tr: Transfer) -> None:
        self._advance()
        if tr.remaining_bytes <= 0:
            tr.done(self.env.now)
            return
        self.active.append(tr)
        for link in tr.links:
            link.active += 1
        self._reschedule()

    def _reschedule(self) -> None:
        self._version += 1
        if not self.active:
            return
        soonest = float("inf")
        for tr in self.active:
            tr.rate_bytes_per_s = min(link.bandwidth_bytes_per_s / link.active for link in tr.links)
            soonest = min(soonest, tr.remaining_bytes / tr.rate_bytes_per_s)
        version = self._version
        self.env.timeout(max(0.0, soonest)).callbacks.append(lambda _e: self._tick(version))

    def _tick(self, version: int) -> None:
        if version != self._version:
            return            # a start or an end since this timer was set changed the rates
        self._advance()
        finished = [tr for tr in self.active if tr.remaining_bytes <= 1e-9 * tr.rate_bytes_per_s + 1e-6]
        for tr in finished:
            self.active.remove(tr)
            for link in tr.links:
                link.active -= 1
        self._reschedule()
        now = self.env.now
        for tr in sorted(finished, key=lambda t: t.order):
            tr.done(now)
