"""Fitting tools shared by the calibrated kernel families: a small Levenberg-Marquardt on log time,
a two-roof time formula, and residual interpolators (1-D in log size, kernel-weighted in several).

All fits minimise squared log error, i.e. relative error, because kernel times span six decades
and a 1 µs kernel matters as much to an iteration of many small kernels as a 10 ms one does.
numpy only: fitting runs in CI and in `simcluster calibrate fit`, never per query.
"""

from __future__ import annotations

import numpy as np


def two_roof_s(overhead_s: float, compute_s, memory_s, sharpness: float):
    """overhead + (Tc^p + Tm^p)^(1/p): the roofline max(Tc, Tm) with a soft corner.

    p → ∞ gives the hard roofline; finite p models the overlap loss near the ridge point
    (Williams, Waterman, Patterson, "Roofline", CACM 2009, for the hard form).
    """
    p = sharpness
    tc, tm = np.asarray(compute_s, float), np.asarray(memory_s, float)
    big = np.maximum(tc, tm)
    big = np.where(big > 0, big, 1e-30)
    return overhead_s + big * ((tc / big) ** p + (tm / big) ** p) ** (1.0 / p)


def fit_log_lm(model, theta0, t_s, iters: int = 80, damping: float = 1e-2) -> np.ndarray:
    """Parameters θ minimising Σ (log model(θ) − log t)²: Levenberg-Marquardt, numeric Jacobian.

    model(θ) returns predicted seconds for every row; θ is unconstrained (models exponentiate
    what must stay positive). Deterministic: no random restarts.
    """
    theta = np.asarray(theta0, float).copy()
    log_t = np.log(np.asarray(t_s, float))

    def residual(th):
        with np.errstate(all="ignore"):
            pred = np.asarray(model(np.clip(th, -60.0, 60.0)), float)
            r = np.log(np.maximum(pred, 1e-30)) - log_t
        # A trial step into overflow is simply a bad step, not an error.
        return np.where(np.isfinite(r), r, 1e3)

    r = residual(theta)
    cost = float(r @ r)
    lam = damping
    for _ in range(iters):
        jac = np.empty((len(r), len(theta)))
        for j in range(len(theta)):
            step = 1e-6 * max(1.0, abs(theta[j]))
            th = theta.copy()
            th[j] += step
            jac[:, j] = (residual(th) - r) / step
        jtj, jtr = jac.T @ jac, jac.T @ r
        improved = False
        for _ in range(12):
            # The floor keeps a parameter with a flat gradient (a roof that never binds) still.
            floor = 1e-6 * np.trace(jtj) / len(theta) + 1e-12
            delta = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj) + floor), -jtr)
            trial = theta + delta
            r_trial = residual(trial)
            c_trial = float(r_trial @ r_trial)
            if np.isfinite(c_trial) and c_trial < cost:
                theta, r, lam = trial, r_trial, max(lam / 3.0, 1e-9)
                improved = cost - c_trial > 1e-12 * max(cost, 1e-30)
                cost = c_trial
                break
            lam *= 4.0
        if not improved:
            break
    return np.clip(theta, -60.0, 60.0)


class Interp1D:
    """Piecewise-linear interpolation of y over sorted x (both usually logs); None outside [x0, xn]."""

    def __init__(self, x, y):
        order = np.argsort(x)
        self.x = np.asarray(x, float)[order]
        self.y = np.asarray(y, float)[order]

    def __call__(self, x: float) -> float | None:
        if len(self.x) == 0 or x < self.x[0] - 1e-9 or x > self.x[-1] + 1e-9:
            return None
        return float(np.interp(x, self.x, self.y))

    def to_json(self) -> dict:
        return {"x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "Interp1D":
        return cls(d["x"], d["y"])


class Smoother:
    """Local-linear kernel regression of log residuals (Gaussian kernel) in feature space.

    Local-linear rather than a plain weighted mean so that a query between measured families
    follows the trend across them (Cleveland & Devlin 1988, 'Locally weighted regression').
    `prior_weight` and `ridge` pull the fit toward 0 (no correction) and a flat trend where few
    fitted points lie near the query, so the correction fades far from the measurements.
    """

    def __init__(self, points, residuals, bandwidth, prior_weight: float = 0.3, ridge: float = 10.0):
        self.points = np.atleast_2d(np.asarray(points, float))
        self.residuals = np.asarray(residuals, float)
        self.bandwidth = np.asarray(bandwidth, float)
        self.prior_weight = prior_weight
        self.ridge = ridge

    def many(self, queries) -> np.ndarray:
        """Corrections at every row of `queries` (vectorised)."""
        q = np.atleast_2d(np.asarray(queries, float))
        if len(self.residuals) == 0:
            return np.zeros(len(q))
        # Never extrapolate a local trend: a query outside the measured box takes the correction
        # at the nearest face, and no correction exceeds the residuals actually measured.
        q = np.clip(q, self.points.min(axis=0), self.points.max(axis=0))
        out = local_linear(self.points, self.residuals, q, self.bandwidth, self.prior_weight, self.ridge)
        return np.clip(out, self.residuals.min(), self.residuals.max())

    def __call__(self, x) -> float:
        return float(self.many([x])[0])

    def to_json(self) -> dict:
        return {"points": self.points.tolist(), "residuals": self.residuals.tolist(),
                "bandwidth": self.bandwidth.tolist(), "prior_weight": self.prior_weight,
                "ridge": self.ridge}

    @classmethod
    def from_json(cls, d: dict) -> "Smoother":
        return cls(d["points"], d["residuals"], d["bandwidth"], d["prior_weight"], d.get("ridge", 10.0))


def local_linear(points, residuals, queries, bandwidth, prior_weight: float, ridge: float) -> np.ndarray:
    """Intercepts of Gaussian-weighted ridge regressions of residuals on (points − query)."""
    points = np.asarray(points, float)
    queries = np.atleast_2d(np.asarray(queries, float))
    dim = points.shape[1]
    penalty = np.diag([prior_weight] + [ridge] * dim)
    out = np.empty(len(queries))
    for lo in range(0, len(queries), 128):          # chunks bound the (q, n, d) temporaries
        q = queries[lo:lo + 128]
        diff = points[None, :, :] - q[:, None, :]                     # (q, n, d)
        z = diff / bandwidth
        w = np.exp(-0.5 * np.einsum("qnd,qnd->qn", z, z))            # (q, n)
        x = np.concatenate([np.ones(diff.shape[:2] + (1,)), diff], axis=2)
        xw = x * w[:, :, None]
        a = np.einsum("qni,qnj->qij", xw, x, optimize=True) + penalty
        b = np.einsum("qni,n->qi", xw, residuals, optimize=True)
        out[lo:lo + len(q)] = np.linalg.solve(a, b[..., None])[:, 0, 0]
    return out


def choose_bandwidth(points, residuals, groups, candidates, prior_weight: float = 0.3,
                     ridge: float = 10.0):
    """The bandwidth among `candidates` with the least leave-one-group-out squared error.

    Leaving out a whole group (e.g. every m of one (n, k) GEMM family) mimics the query the
    smoother serves: a shape family it has not seen.
    """
    points = np.atleast_2d(np.asarray(points, float))
    residuals = np.asarray(residuals, float)
    groups = np.asarray(groups)
    best, best_err = candidates[0], float("inf")
    for bw in candidates:
        err = 0.0
        for g in np.unique(groups):
            out = groups == g
            pred = local_linear(points[~out], residuals[~out], points[out], np.asarray(bw, float),
                                prior_weight, ridge)
            err += float(((pred - residuals[out]) ** 2).sum())
        if err < best_err:
            best, best_err = bw, err
    return best


def ape(predicted_s, measured_s) -> np.ndarray:
    """Absolute percentage errors |pred − meas| / meas × 100."""
    p, m = np.asarray(predicted_s, float), np.asarray(measured_s, float)
    return np.abs(p - m) / m * 100.0
