"""GEMM family: a wave-quantized two-roof curve fitted per GPU and dtype, corrected by the measured
residuals — interpolated in log m for an (n, k) the table holds ('measured'), kernel-smoothed
over (log m, log n, log k) from the neighbouring families for one it does not ('fitted').

A shape whose k or n leaves a row stride off 16 bytes (gemm_misaligned.csv: every catalog width
is aligned) takes a further slowdown over log m, measured on misaligned shapes of its own.
"""

from __future__ import annotations

import math

import numpy as np

from simcluster.cost.fit import Interp1D, Smoother, fit_log_lm, two_roof_s
from simcluster.hardware.gpu import GpuSpec
from simcluster.units import dtype_bytes

TILE = 128            # output tile edge of Hopper/Ampere cuBLAS bf16 kernels (CUTLASS 128x128 tiles)
# Kernel bandwidth in (log2 m, log2 n, log2 k), prior weight and ridge of the residual smoother:
# the best of bandwidths (0.25..0.75) × (0.5..1.5), priors 0.1..1 and ridges 1..100 under
# leave-one-(n, k)-family-out cross-validation on the fit split of the H100 and H200 tables.
SMOOTH_BANDWIDTH = (0.5, 0.75, 0.75)
SMOOTH_PRIOR_WEIGHT, SMOOTH_RIDGE = 0.1, 1.0
# Unseen (n, k) families: the correction is tabulated over log2 m on this grid at first use.
LOG2_M_GRID = np.arange(0.0, 17.01, 0.5)
THETA0 = (math.log(3e-6), math.log(1.3), math.log(1.2), math.log(3.0), math.log(0.3), 0.0)
# cuBLAS runs its fastest (TMA, 128-bit load) kernels only on operands whose leading dimensions
# are multiples of 16 bytes (cuBLAS docs, 'Tensor Core Usage' and cublasLt alignment rules).
ALIGN_BYTES = 16


def misalignment(n, k, dtype: str) -> str | None:
    """'k' when A and W rows (stride k) are off 16 bytes, else 'n' when C rows are, else None."""
    per = max(1, int(ALIGN_BYTES // dtype_bytes(dtype)))
    if int(k) % per:
        return "k"
    if int(n) % per:
        return "n"
    return None


def gemm_features(m, n, k, dtype: str, gpu: GpuSpec):
    """(compute s at peak, memory s at peak, tile occupancy, k-serial s) of C[m,n] = A[m,k] B[k,n].

    Occupancy: output tiles / SMs, capped at 1 — too few tiles leave SMs idle (NVIDIA 'Matrix
    Multiplication Background' guide, 'Tile quantization'). k-serial: one row of k elements per
    ms-unit of bandwidth, the reduction every output tile walks in sequence; it is what makes a
    GEMV over a long k slower than its bytes alone say.
    """
    m, n, k = (np.asarray(x, float) for x in (m, n, k))
    b = dtype_bytes(dtype)
    tiles = np.ceil(m / TILE) * np.ceil(n / TILE)
    occupancy = np.minimum(1.0, tiles / max(gpu.sm_count, 1))
    compute_s = 2.0 * m * n * k / gpu.flops_per_s(dtype)
    memory_s = b * (m * k + k * n + m * n) / gpu.hbm_bandwidth_bytes_per_s
    k_serial_s = k * b / gpu.hbm_bandwidth_bytes_per_s * 1e3
    return compute_s, memory_s, occupancy, k_serial_s


def gemm_base_s(theta, feats):
    """θ = log of (overhead s, compute factor, memory factor, sharpness − 1, occupancy exponent,
    k-serial factor)."""
    compute_s, memory_s, occupancy, k_serial_s = feats
    e = np.exp(np.asarray(theta, float))
    return two_roof_s(e[0] + e[5] * k_serial_s, e[1] * compute_s * occupancy ** (-e[4]),
                      e[2] * memory_s, 1.0 + e[3])


class GemmDtypeFit:
    """Fitted curve and residual corrections for one dtype on one GPU."""

    def __init__(self, theta, families: dict, smoother: Smoother, m_range: dict, misaligned: dict | None = None):
        self.theta = np.asarray(theta, float)
        self.families = families            # (n, k) -> Interp1D of log residual over log2 m
        self.smoother = smoother
        self.m_range = m_range
        self.misaligned = misaligned or {}  # 'k' / 'n' -> Interp1D of log slowdown over log2 m
        self._unseen: dict[tuple[int, int], Interp1D] = {}   # (n, k) -> correction over log2 m

    @classmethod
    def fit(cls, m, n, k, time_s, dtype: str, gpu: GpuSpec) -> "GemmDtypeFit":
        m, n, k, t = (np.asarray(x, float) for x in (m, n, k, time_s))
        feats = gemm_features(m, n, k, dtype, gpu)
        theta = fit_log_lm(lambda th: gemm_base_s(th, feats), THETA0, t)
        resid = np.log(t) - np.log(gemm_base_s(theta, feats))
        families = {}
        for key in sorted(set(zip(n.tolist(), k.tolist()))):
            sel = (n == key[0]) & (k == key[1])
            lm = np.log2(m[sel])
            # Repeated m (re-measured points) are averaged so interpolation stays a function.
            xs = np.unique(lm)
            ys = [resid[sel][lm == x].mean() for x in xs]
            families[(int(key[0]), int(key[1]))] = Interp1D(xs, ys)
        points = np.column_stack([np.log2(m), np.log2(n), np.log2(k)])
        return cls(theta, families, Smoother(points, resid, SMOOTH_BANDWIDTH, SMOOTH_PRIOR_WEIGHT, SMOOTH_RIDGE),
                   {"min": float(m.min()), "max": float(m.max())})

    def fit_misalignment(self, m, n, k, time_s, dtype: str, gpu: GpuSpec) -> None:
        """Slowdown curves of misaligned shapes: their log(measured / aligned prediction), averaged
        per m within each kind ('k' or 'n', see `misalignment`)."""
        kinds: dict[str, dict[float, list[float]]] = {}
        for mi, ni, ki, ti in zip(*(np.asarray(x, float).tolist() for x in (m, n, k, time_s))):
            kind = misalignment(ni, ki, dtype)
            if kind is None:
                continue
            aligned, _ = self._aligned_s(mi, ni, ki, dtype, gpu)
            kinds.setdefault(kind, {}).setdefault(math.log2(max(mi, 1.0)), []).append(math.log(ti / aligned))
        self.misaligned = {kind: Interp1D(list(by_m), [float(np.mean(v)) for v in by_m.values()])
                           for kind, by_m in sorted(kinds.items())}

    def predict_s(self, m: float, n: float, k: float, dtype: str, gpu: GpuSpec) -> tuple[float, bool]:
        """(seconds, True when an interpolated measured family covered the shape)."""
        t, covered = self._aligned_s(m, n, k, dtype, gpu)
        curve = self.misaligned.get(misalignment(n, k, dtype))
        # A measured family's own residual already holds its slowdown (off-grid rows, split 'all').
        if curve is not None and not covered:
            # Outside the measured m range the nearest measured slowdown holds.
            x = min(max(math.log2(max(m, 1.0)), float(curve.x[0])), float(curve.x[-1]))
            t *= math.exp(curve(x))
        return t, covered

    def _aligned_s(self, m: float, n: float, k: float, dtype: str, gpu: GpuSpec) -> tuple[float, bool]:
        base = float(gemm_base_s(self.theta, gemm_features(m, n, k, dtype, gpu)))
        fam = self.families.get((int(n), int(k)))
        if fam is not None:
            r = fam(math.log2(max(m, 1.0)))
            if r is not None:
                return base * math.exp(r), True
        return base * math.exp(self._unseen_correction(n, k, math.log2(max(m, 1.0)))), False

    def _unseen_correction(self, n: float, k: float, log2_m: float) -> float:
        key = (int(n), int(k))
        if key not in self._unseen:
            grid = np.column_stack([LOG2_M_GRID, np.full_like(LOG2_M_GRID, math.log2(n)),
                                    np.full_like(LOG2_M_GRID, math.log2(k))])
            self._unseen[key] = Interp1D(LOG2_M_GRID, self.smoother.many(grid))
        x = min(max(log2_m, LOG2_M_GRID[0]), LOG2_M_GRID[-1])
        return self._unseen[key](x)

    def to_json(self) -> dict:
        return {"theta": self.theta.tolist(),
                "families": [{"n": n, "k": k, **f.to_json()} for (n, k), f in self.families.items()],
                "smoother": self.smoother.to_json(), "m_range": self.m_range,
                "misaligned": {kind: c.to_json() for kind, c in self.misaligned.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "GemmDtypeFit":
        fams = {(int(f["n"]), int(f["k"])): Interp1D(f["x"], f["y"]) for f in d["families"]}
        return cls(d["theta"], fams, Smoother.from_json(d["smoother"]), d["m_range"],
                   {kind: Interp1D.from_json(c) for kind, c in d.get("misaligned", {}).items()})


def fit_gemm(frame, gpu: GpuSpec, misaligned=None) -> dict[str, GemmDtypeFit]:
    """One GemmDtypeFit per dtype present in a gemm.csv frame; `misaligned` (a gemm_misaligned.csv
    frame) adds the slowdown curves of the dtypes it holds."""
    out = {}
    for dtype, rows in frame.groupby("dtype", sort=True):
        if len(rows) < 6:
            continue
        fit = out[str(dtype)] = GemmDtypeFit.fit(rows["m"], rows["n"], rows["k"], rows["time_s"], str(dtype), gpu)
        if misaligned is not None:
            mis = misaligned[misaligned["dtype"] == dtype]
            if len(mis):
                fit.fit_misalignment(mis["m"], mis["n"], mis["k"], mis["time_s"], str(dtype), gpu)
    return out
