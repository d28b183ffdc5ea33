"""Collectives fitted to NCCL measurements (collectives.csv), with the closed forms of
collectives.py for what was not measured.

Per measured (op, world size): a latency floor and a bytes / bandwidth line, fitted on log time,
and the measured residual interpolated in log size — NCCL switches protocol (LL, LL128, Simple)
with the message size, so small messages sit on a latency floor that one alpha-beta line misses. Outside the
measured sizes the alpha-beta line extrapolates ('fitted'). For world sizes or node spans not
measured, the closed forms run on links whose bandwidth is the datasheet figure × the bus
efficiency measured for that op, and whose per-hop latency is the fitted one ('fitted'); a GPU
with no measurements borrows the efficiencies of the nearest measured GPU ('transferred').
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from simcluster.cost.collectives import COLLECTIVES, LinkParams, bus_factor, collective_time_s
from simcluster.cost.fit import Interp1D, fit_log_lm, two_roof_s



def ring_steps(op: str, n: int) -> int:
    """Latency hops of the ring algorithm (collectives.ring_time_s counts the same)."""
    return {"all_reduce": 2 * (n - 1), "send_recv": 1}.get(op, max(n - 1, 1))


@dataclass(frozen=True)
class CollectiveCurve:
    """One measured (op, world size): a latency floor and a bandwidth line joined by a soft max,
    t = overhead + (floor^p + (S / bandwidth)^p)^(1/p), times a residual interpolated in log2 S.

    The floor is NCCL's small-message protocol latency; the line its large-message bandwidth.
    """

    op: str
    world_size: int
    latency_s: float                 # floor + overhead: the time of a tiny message
    bandwidth_bytes_per_s: float     # algorithm bandwidth S / t of the large-message line
    residual: Interp1D
    overhead_s: float = 0.0
    sharpness: float = 2.0
    peak_bus_bytes_per_s: float = 0.0   # the best measured busbw (nccl-tests' headline figure)

    @classmethod
    def fit(cls, op: str, world_size: int, size_bytes, time_s) -> "CollectiveCurve":
        s, t = np.asarray(size_bytes, float), np.asarray(time_s, float)

        def model(th):
            return two_roof_s(math.exp(th[0]), math.exp(th[1]), s / math.exp(th[2]), 1.0 + math.exp(th[3]))
        theta = fit_log_lm(model, [math.log(1e-6), math.log(max(t.min(), 1e-7)),
                                   math.log(max(s.max() / t.max(), 1.0)), 0.0], t)
        overhead, floor, bandwidth, sharp = (math.exp(x) for x in theta)
        resid = np.log(t) - np.log(model(theta))
        xs = np.log2(s)
        ux = np.unique(xs)
        peak = float((s / t).max() * bus_factor(op, world_size))
        return cls(op, world_size, overhead + floor, bandwidth,
                   Interp1D(ux, [resid[xs == x].mean() for x in ux]), overhead, 1.0 + sharp, peak)

    def base_s(self, size_bytes: float) -> float:
        floor = self.latency_s - self.overhead_s
        return float(two_roof_s(self.overhead_s, floor, size_bytes / self.bandwidth_bytes_per_s, self.sharpness))

    def predict_s(self, size_bytes: float) -> tuple[float, bool]:
        base = self.base_s(size_bytes)
        r = self.residual(math.log2(max(size_bytes, 1.0)))
        return (base * math.exp(r), True) if r is not None else (base, False)

    def bus_bandwidth_bytes_per_s(self) -> float:
        """The best measured nccl-tests busbw (algbw × bus factor); the fitted line's when the
        curve was built without rows."""
        return self.peak_bus_bytes_per_s or self.bandwidth_bytes_per_s * bus_factor(self.op, self.world_size)

    def to_json(self) -> dict:
        return {"op": self.op, "world_size": self.world_size, "latency_s": self.latency_s,
                "bandwidth_bytes_per_s": self.bandwidth_bytes_per_s, "residual": self.residual.to_json(),
                "overhead_s": self.overhead_s, "sharpness": self.sharpness,
                "peak_bus_bytes_per_s": self.peak_bus_bytes_per_s}

    @classmethod
    def from_json(cls, d: dict) -> "CollectiveCurve":
        return cls(d["op"], int(d["world_size"]), float(d["latency_s"]), float(d["bandwidth_bytes_per_s"]),
                   Interp1D.from_json(d["residual"]), float(d.get("overhead_s", 0.0)), float(d.get("sharpness", 2.0)),
                   float(d.get("peak_bus_bytes_per_s", 0.0)))


def fit_collectives(frame) -> dict[tuple[str, int], CollectiveCurve]:
    """One CollectiveCurve per (op, world_size) of a collectives.csv frame with ≥ 3 sizes."""
    out = {}
    for (op, world), rows in frame.groupby(["op", "world_size"], sort=True):
        if str(op) in COLLECTIVES and len(rows) >= 3:
            out[(str(op), int(world))] = CollectiveCurve.fit(str(op), int(world), rows["bytes"], rows["time_s"])
    return out


def link_efficiency(curves: dict, datasheet_bandwidth_bytes_per_s: float, hop_latency_s: float) -> dict[str, tuple[float, float]]:
    """op -> (bus efficiency vs the datasheet link, fixed overhead s), from the largest measured
    world size of each op. The fixed overhead is the measured small-message time beyond
    `hop_latency_s` per ring hop: launch and protocol set-up that do not grow with the group."""
    out = {}
    for op in sorted({op for op, _ in curves}):
        world = max(w for o, w in curves if o == op)
        c = curves[(op, world)]
        out[op] = (c.bus_bandwidth_bytes_per_s() / datasheet_bandwidth_bytes_per_s,
                   max(0.0, c.latency_s - ring_steps(op, world) * hop_latency_s))
    return out


class CalibratedCollectives:
    """`time_s(collective, size_bytes, n, scope) -> (seconds, method)` for CostModel.

    curves: measured (op, world) curves of this GPU's node (empty for a GPU never measured);
    efficiency: op -> (bus efficiency, fixed overhead s), this GPU's own or the nearest measured
    GPU's; transferred says which. links: the node's datasheet LinkParams (before efficiency).
    """

    def __init__(self, links: LinkParams, datasheet_intra_bytes_per_s: float, curves: dict,
                 efficiency: dict, transferred: bool):
        self.links = links
        self.datasheet_intra_bytes_per_s = datasheet_intra_bytes_per_s
        self.curves = curves
        self.efficiency = efficiency
        self.transferred = transferred
        self._links_by_op: dict[str, LinkParams] = {}

    def _efficiency(self, op: str) -> tuple[float, float] | None:
        return self.efficiency.get(op) or self.efficiency.get("all_reduce")

    def links_for(self, op: str) -> LinkParams:
        """The node's links with the intra-node bandwidth measured for `op` (all_reduce's for an
        op never measured); hop latencies and inter-node figures stay the datasheet ones × the
        LinkParams.from_node efficiency: the lent machines had one node."""
        if op not in self._links_by_op:
            eff = self._efficiency(op)
            links = self.links
            if eff is not None:
                links = replace(links, intra_bandwidth_bytes_per_s=self.datasheet_intra_bytes_per_s * eff[0])
            self._links_by_op[op] = links
        return self._links_by_op[op]

    def time_s(self, collective: str, size_bytes: float, n: int, scope: str = "intra") -> tuple[float, str]:
        if n <= 1 or size_bytes <= 0:
            return 0.0, "measured" if self.curves else "alpha-beta"
        curve = self.curves.get((collective, n))
        if curve is not None and scope == "intra" and n <= self.links.gpus_per_node:
            t, covered = curve.predict_s(size_bytes)
            return t, "measured" if covered else "fitted"
        t = collective_time_s(collective, size_bytes, n, self.links_for(collective), scope)
        if not self.efficiency:
            return t, "alpha-beta"
        t += self._efficiency(collective)[1]
        return t, "transferred" if self.transferred else "fitted"
