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

GRID_STEP = 0.25            # log2 units: corrections tabulated every 19% of batch/length/size
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
        self._grids: dict = {}          # (layout, covered, layout coords) -> tabulated correction
        self._e = [math.exp(min(max(x, -60.0), 60.0)) for x in self.theta.tolist()]

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
            # A measured layout's own points: a kernel as narrow as the grid allows (at least 0.4
            # of its median spacing, so a query between two measured points sees both), weak
            # prior (trust the table).
            bw = [max(b, 0.4 * _spacing(c)) for b, c in zip(local_bandwidth, coords[sel].T)]
            layouts[key] = Smoother(coords[sel], resid[sel], bw, prior_weight=0.01, ridge=1.0)
            boxes[key] = [[float(c.min()), float(c.max())] for c in coords[sel].T]
        smoother = Smoother(np.column_stack([coords, layout_coords]), resid, global_bandwidth)
        return cls(theta, layouts, boxes, smoother)

    def predict_s(self, compute_s, memory_s, occupancy, layout_key: str, coords, layout_coords) -> tuple[float, bool]:
        """(seconds, True when a measured layout's box held the query)."""
        base = self._base_s(float(compute_s), float(memory_s), float(occupancy))
        box = self.boxes.get(layout_key)
        covered = box is not None and all(lo - 1e-9 <= c <= hi + 1e-9 for c, (lo, hi) in zip(coords, box))
        return base * math.exp(self._correction(layout_key, covered, coords, layout_coords)), covered

    def covers_layout(self, layout_coords, margin: float = 1.0) -> bool:
        """Whether a layout lies within `margin` (log2 units) of the measured layouts' range: a
        curve fitted on head dims 64..128 says nothing about a 576-wide MLA latent."""
        pts = self.smoother.points[:, -len(layout_coords):]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        return all(lo[i] - margin <= c <= hi[i] + margin for i, c in enumerate(layout_coords))

    def _base_s(self, tc: float, tm: float, occ: float) -> float:
        """curve_s for one scalar query, in plain floats (numpy costs ~20 µs a scalar call)."""
        e = self._e
        c = e[1] * tc * min(max(occ, 1e-3), 1.0) ** (-e[4])
        m = e[2] * tm
        p = 1.0 + e[3]
        big = max(c, m)
        if big <= 0:
            return e[0]
        return e[0] + big * ((c / big) ** p + (m / big) ** p) ** (1.0 / p)

    def _correction(self, key: str, covered: bool, coords, layout_coords) -> float:
        # The smoothers cost ~100 µs a query; the serving simulator asks for thousands of
        # distinct shapes, so each layout's correction is tabulated once on a GRID_STEP grid
        # and read back by multilinear interpolation (a few µs).
        gkey = (key, covered) if covered else (key, covered, tuple(layout_coords))
        grid = self._grids.get(gkey)
        if grid is None:
            if covered:
                box, smoother, extra = self.boxes[key], self.layouts[key], []
            else:
                box = [[min(b[i][0] for b in self.boxes.values()), max(b[i][1] for b in self.boxes.values())]
                       for i in range(len(coords))]
                smoother, extra = self.smoother, list(layout_coords)
            step = GRID_STEP if covered else 2 * GRID_STEP     # unseen layouts: smoother, coarser
            axes = [np.arange(lo, hi + step, step) if hi > lo else np.array([lo]) for lo, hi in box]
            mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(axes))
            points = np.column_stack([mesh, np.tile(extra, (len(mesh), 1))]) if extra else mesh
            values = smoother.many(points).reshape([len(a) for a in axes])
            grid = self._grids[gkey] = ([(float(a[0]), len(a), step) for a in axes], values.tolist())
        return _multilinear(grid, coords)

    def to_json(self) -> dict:
        return {"theta": self.theta.tolist(), "boxes": self.boxes,
                "layouts": {k: s.to_json() for k, s in self.layouts.items()},
                "smoother": self.smoother.to_json()}

    @classmethod
    def from_json(cls, d: dict) -> "CurveFit":
        return cls(d["theta"], {k: Smoother.from_json(v) for k, v in d["layouts"].items()},
                   d["boxes"], Smoother.from_json(d["smoother"]))


def _multilinear(grid, coords) -> float:
    """Interpolate a tabulated grid ([(start, count) per axis], values) at coords (clamped)."""
    axes, values = grid
    idx, frac = [], []
    for (start, count, step), x in zip(axes, coords):
        pos = min(max((x - start) / step, 0.0), count - 1.0)
        i = min(int(pos), max(count - 2, 0))
        idx.append(i)
        frac.append(pos - i if count > 1 else 0.0)
    if len(idx) == 1:
        i, f = idx[0], frac[0]
        return values[i] * (1 - f) + (values[i + 1] * f if f else 0.0)
    total = 0.0
    for corner in range(1 << len(idx)):
        w, at = 1.0, []
        for d, (i, f) in enumerate(zip(idx, frac)):
            if corner >> d & 1:
                w *= f
                at.append(i + 1)
            else:
                w *= 1 - f
                at.append(i)
        if w:
            v = values
            for j in at:
                v = v[j]
            total += w * v
    return total


def _spacing(values) -> float:
    """Median gap between the distinct values of one coordinate (0 when there is one)."""
    u = np.unique(np.round(np.asarray(values, float), 6))
    return float(np.median(np.diff(u))) if len(u) > 1 else 0.0
