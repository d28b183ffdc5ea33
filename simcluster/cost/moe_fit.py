"""MoE expert computation: a grouped SwiGLU GEMM over uneven tokens per expert, fitted as a
CurveFit whose compute roof grows with the load imbalance (the busiest expert sets the pace)."""

from __future__ import annotations

import math

import numpy as np

from simcluster.cost.curve_fit import CurveFit
from simcluster.hardware.gpu import GpuSpec
from simcluster.llm.ops import expected_experts_touched
from simcluster.units import dtype_bytes

ELEM_BYTES = 2.0
MATRICES = 3                 # SwiGLU experts: gate, up and down projections
LOCAL_BANDWIDTH = (0.6, 0.5)         # log2 (assignments, imbalance)
GLOBAL_BANDWIDTH = (1.0, 0.5, 1.0, 1.0, 1.0)
PREFERRED_IMPL = ("grouped_mm", "loop_mm")   # fused grouped kernels are what serving engines run


def moe_counts(assignments, n_local, hidden, expert_ffn, weight_bytes: float = ELEM_BYTES):
    """(FLOPs, bytes) of the expert FFN for `assignments` token-expert pairs on n_local experts:
    2·3·h·f FLOPs a pair; the weights of every touched expert (balls into bins, llm.ops) plus
    each pair's input, intermediate and output activations (bf16)."""
    a, e, h, f = (np.asarray(x, float) for x in (assignments, n_local, hidden, expert_ffn))
    touched = np.vectorize(lambda n, t: expected_experts_touched(int(n), 1, int(t)))(e, a)
    flops = 2.0 * MATRICES * h * f * a
    bytes_ = touched * MATRICES * h * f * weight_bytes + a * (2 * h + 2 * f) * ELEM_BYTES
    return flops, bytes_


def layout_key(n_local, hidden, expert_ffn) -> str:
    return f"{int(n_local)}/{int(hidden)}/{int(expert_ffn)}"


def fit_moe(frame, gpu: GpuSpec) -> CurveFit | None:
    impls = set(frame["impl"]) if "impl" in frame.columns else set()
    impl = next((i for i in PREFERRED_IMPL if i in impls), None)
    rows = frame[frame["impl"] == impl] if impl else frame
    if len(rows) < 6:
        return None
    a = rows["assignments"] if "assignments" in rows.columns else rows["tokens"] * rows["top_k"]
    flops, bytes_ = moe_counts(a, rows["n_experts"], rows["hidden"], rows["expert_ffn"])
    keys = [layout_key(e, h, f) for e, h, f in zip(rows["n_experts"], rows["hidden"], rows["expert_ffn"])]
    coords = np.log2(np.column_stack([np.asarray(a, float), rows["imbalance"].to_numpy(float)]))
    lcoords = np.log2(rows[["n_experts", "hidden", "expert_ffn"]].to_numpy(float))
    # occupancy = 1 / imbalance: the compute roof scales as imbalance^γ with γ fitted.
    return CurveFit.fit(flops / gpu.flops_per_s("bf16"), bytes_ / gpu.hbm_bandwidth_bytes_per_s,
                        1.0 / rows["imbalance"].to_numpy(float), rows["time_s"], keys, coords, lcoords,
                        LOCAL_BANDWIDTH, GLOBAL_BANDWIDTH)


def predict_moe_s(fit: CurveFit, gpu: GpuSpec, assignments: float, n_local: float, hidden: float,
                  expert_ffn: float, imbalance: float, dtype: str = "bf16") -> tuple[float, bool]:
    flops, bytes_ = moe_counts(assignments, n_local, hidden, expert_ffn, dtype_bytes(dtype))
    return fit.predict_s(float(flops) / gpu.flops_per_s(dtype), float(bytes_) / gpu.hbm_bandwidth_bytes_per_s,
                         1.0 / max(imbalance, 1.0), layout_key(n_local, hidden, expert_ffn),
                         [math.log2(max(assignments, 1.0)), math.log2(max(imbalance, 1.0))],
                         [math.log2(max(n_local, 1.0)), math.log2(hidden), math.log2(max(expert_ffn, 1.0))])
