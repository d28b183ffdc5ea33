"""CurveFit: a two-roof time curve over (compute s, memory s, occupancy) fitted to one kernel
family's measurements, with residual corrections — local to a measured layout ('measured' when a
query falls inside the layout's measured box) or smoothed across layouts ('fitted').

Used for attention (layout = heads, kv heads, head dim), MoE (layout = expert shape) and the
memory-bound elementwise ops (layout = op). GEMM has its own, richer curve (gemm_fit.py).
"""

from __future__ import annotations

import math

import numpy as np

from simcluster.cost.fit import Smoother, fit_log_lm, two_roof_s

THETA0 = (math.log(3e-6), math.log(1.5), math.log(1.3), math.log(3.0), math.log(0.3))


def curve_s(theta, compute_s, memory_s, occupancy):
    """θ = log of (overhead s, compute factor, memory factor, sharpness − 1, occupancy exponent):
    overhead + soft max(factor_c · Tc / occupancy^γ, factor_m · Tm)."""
    e = np.exp(np.asarray(theta, float))
    occ = np.clip(np.asarray(occupancy, float), 1e-3, 1.0)
    return two_roof_s(e[0], e[1] * np.asarray(compute_s, float) * occ ** (-e[4]),
                      e[2] * np.asarray(memory_s, float), 1.0 + e[3])


class CurveFit:
    """Fitted curve of one kernel family on one GPU, with per-layout and cross-layout corrections.

    coords: per-row local coordinates inside a layout (logs, e.g. log2 batch, log2 seq_len);
    layout_coords: coordinates of the layout itself (logs, e.g. log2 heads) for the smoother
    that serves layouts never measured.
    """

    def __init__(self, theta, layouts: dict, boxes: dict, smoother: Smoother):
        self.theta = np.asarray(theta, float)
        self.layouts = layouts          # layout key (str) -> Smoother over local coords
        self.boxes = boxes              # layout key -> [[lo, hi] per local coord]
        self.smoother = smoother        # over local coords + layout coords

    @classmethod
    def fit(cls, compute_s, memory_s, occupancy, time_s, layout_keys, coords, layout_coords,
            local_bandwidth, global_bandwidth, theta0=THETA0) -> "CurveFit":
        tc, tm, occ, t = (np.asarray(x, float) for x in (compute_s, memory_s, occupancy, time_s))
        coords = np.atleast_2d(np.asarray(coords, float))
        layout_coords = np.atleast_2d(np.asarray(layout_coords, float))
        theta = fit_log_lm(lambda th: curve_s(th, tc, tm, occ), theta0, t)
        resid = np.log(t) - np.log(curve_s(theta, tc, tm, occ))
        keys = np.asarray(layout_keys)
        layouts, boxes = {}, {}
        for key in sorted(set(keys.tolist())):
            sel = keys == key
            # A measured layout's own points: narrow kernel, weak prior (trust the table).
            layouts[key] = Smoother(coords[sel], resid[sel], local_bandwidth, prior_weight=0.05, ridge=1.0)
            boxes[key] = [[float(c.min()), float(c.max())] for c in coords[sel].T]
        smoother = Smoother(np.column_stack([coords, layout_coords]), resid, global_bandwidth)
        return cls(theta, layouts, boxes, smoother)

    def predict_s(self, compute_s, memory_s, occupancy, layout_key: str, coords, layout_coords) -> tuple[float, bool]:
        """(seconds, True when a measured layout's box held the query)."""
        base = float(curve_s(self.theta, compute_s, memory_s, occupancy))
        box = self.boxes.get(layout_key)
        if box is not None and all(lo - 1e-9 <= c <= hi + 1e-9 for c, (lo, hi) in zip(coords, box)):
            return base * math.exp(self.layouts[layout_key](coords)), True
        return base * math.exp(self.smoother(list(coords) + list(layout_coords))), False

    def to_json(self) -> dict:
        return {"theta": self.theta.tolist(), "boxes": self.boxes,
                "layouts": {k: s.to_json() for k, s in self.layouts.items()},
                "smoother": self.smoother.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> "CurveFit":
        return cls(d["theta"], {k: Smoother.from_json(v) for k, v in d["layouts"].items()},
                   d["boxes"], Smoother.from_json(d["smoother"]))
