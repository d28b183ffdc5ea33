"""Memory-bound layer pieces (norms, activations, RoPE, residual add, embedding, sampling): one
CurveFit per measured op over bytes moved, and the map from simcluster op kinds to those ops.
"""

from __future__ import annotations

import math

import numpy as np

from simcluster.cost.curve_fit import CurveFit
from simcluster.hardware.gpu import GpuSpec

ELEM_BYTES = 2.0
ROPE_KV_WIDTH = 8 * 128     # calibrate/elementwise.py rotates 8 KV heads of 128 beside the queries
LOCAL_BANDWIDTH = (0.6,)
GLOBAL_BANDWIDTH = (1.0, 1.0)

# How many times each element of the (tokens × hidden) tensor crosses HBM (reads + writes).
PASSES = {"rmsnorm": 2.0, "layernorm": 2.0, "silu_mul": 3.0, "gelu": 2.0, "rope": 4.0,
          "residual_add": 3.0, "embedding": 2.0, "sampling": 2.0, "argmax": 1.0}


def elementwise_bytes(op: str, tokens, hidden):
    """Bytes one call moves: passes × tokens × width × 2 (bf16). RoPE also rotates the K heads."""
    width = np.asarray(hidden, float) + (ROPE_KV_WIDTH if op == "rope" else 0.0)
    return PASSES.get(op, 2.0) * np.asarray(tokens, float) * width * ELEM_BYTES


def table_op(op) -> str | None:
    """The measured op that times a simcluster Op of kind norm/activation/rope/embedding/
    sampling/elementwise, or None when none does."""
    kind = op.kind
    name = op.shape.get("op")
    if kind == "norm":
        return name if name in ("rmsnorm", "layernorm") else "rmsnorm"
    if kind == "activation":
        return "gelu" if name == "gelu" else "silu_mul"
    if kind == "elementwise":
        return "residual_add"
    if kind in ("rope", "embedding", "sampling"):
        return kind
    return None


def fit_elementwise(frame, gpu: GpuSpec) -> dict[str, CurveFit]:
    """One CurveFit per op of an elementwise.csv frame (layout = hidden width)."""
    out = {}
    for op, rows in frame.groupby("op", sort=True):
        if len(rows) < 4:
            continue
        memory_s = elementwise_bytes(str(op), rows["tokens"], rows["hidden"]) / gpu.hbm_bandwidth_bytes_per_s
        keys = [str(int(h)) for h in rows["hidden"]]
        coords = np.log2(rows[["tokens"]].to_numpy(float))
        lcoords = np.log2(rows[["hidden"]].to_numpy(float))
        out[str(op)] = CurveFit.fit(np.zeros(len(rows)), memory_s, np.ones(len(rows)), rows["time_s"], keys,
                                    coords, lcoords, LOCAL_BANDWIDTH, GLOBAL_BANDWIDTH)
    return out


def predict_elementwise_s(fit: CurveFit, gpu: GpuSpec, op: str, tokens: float, hidden: float) -> tuple[float, bool]:
    memory_s = float(elementwise_bytes(op, tokens, hidden)) / gpu.hbm_bandwidth_bytes_per_s
    return fit.predict_s(0.0, memory_s, 1.0, str(int(hidden)), [math.log2(max(tokens, 1.0))],
                         [math.log2(max(hidden, 1.0))])
