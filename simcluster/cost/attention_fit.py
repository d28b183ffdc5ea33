"""Attention families: prefill (causal or full) and decode, each a CurveFit over FLOPs and bytes
counted exactly as simcluster.llm.ops counts them, so a fitted curve times any op the LLM
operator lists produce (chunked prefill included, through its FLOPs).
"""

from __future__ import annotations

import math

import numpy as np

from simcluster.cost.curve_fit import CurveFit
from simcluster.hardware.gpu import GpuSpec

ELEM_BYTES = 2.0                      # the tables are bf16
PREFILL_TILE = 128                    # FlashAttention-2 query block (Dao 2023, section 3.1)
DECODE_SPLIT = 1024                   # keys per split-KV block of flash-decoding
LOCAL_BANDWIDTH = (0.6, 0.6)          # log2 (batch, length): neighbours 2x apart weigh 0.25
GLOBAL_BANDWIDTH = (1.0, 1.0, 1.0, 1.0, 1.0)


def prefill_counts(batch, seq_len, n_heads, n_kv_heads, head_dim, causal=True):
    """(FLOPs, bytes) of prefill attention with no cached prefix, as llm.ops.prefill_attention_op:
    FLOPs = 4·h·d·pairs, pairs = s(s+1)/2 causal or s² full; bytes = Q and O + K and V once."""
    b, s, h, kv, d = (np.asarray(x, float) for x in (batch, seq_len, n_heads, n_kv_heads, head_dim))
    pairs = np.where(np.asarray(causal, bool), s * (s + 1) / 2.0, s * s)
    flops = 4.0 * h * d * b * pairs
    bytes_ = b * s * h * 2 * d * ELEM_BYTES + b * s * 2 * kv * d * ELEM_BYTES
    return flops, bytes_


def decode_counts(batch, context_len, n_heads, n_kv_heads, head_dim):
    """(FLOPs, bytes) of one decode step, as llm.ops.decode_attention_op: every cached K/V byte
    read once, 4·h·d FLOPs per key."""
    b, c, h, kv, d = (np.asarray(x, float) for x in (batch, context_len, n_heads, n_kv_heads, head_dim))
    flops = 4.0 * h * d * b * c
    bytes_ = b * c * 2 * kv * d * ELEM_BYTES + b * h * 2 * d * ELEM_BYTES
    return flops, bytes_


def prefill_occupancy(batch, seq_len, n_heads, gpu: GpuSpec):
    """Query blocks per SM, capped at 1: FlashAttention launches one CTA per (batch, head, block)."""
    b, s, h = (np.asarray(x, float) for x in (batch, seq_len, n_heads))
    return np.minimum(1.0, b * h * np.ceil(s / PREFILL_TILE) / max(gpu.sm_count, 1))


def decode_occupancy(batch, context_len, n_kv_heads, gpu: GpuSpec):
    b, c, kv = (np.asarray(x, float) for x in (batch, context_len, n_kv_heads))
    return np.minimum(1.0, b * kv * np.ceil(c / DECODE_SPLIT) / max(gpu.sm_count, 1))


def layout_key(n_heads, n_kv_heads, head_dim, causal=None) -> str:
    key = f"{int(n_heads)}/{int(n_kv_heads)}/{int(head_dim)}"
    return key if causal is None else key + ("/causal" if causal else "/full")


def _logs(*xs):
    return [math.log2(max(float(x), 1.0)) for x in xs]


def fit_prefill(frame, gpu: GpuSpec) -> CurveFit:
    f = frame
    flops, bytes_ = prefill_counts(f["batch"], f["seq_len"], f["n_heads"], f["n_kv_heads"], f["head_dim"], f["causal"])
    occ = prefill_occupancy(f["batch"], f["seq_len"], f["n_heads"], gpu)
    keys = [layout_key(h, kv, d, c) for h, kv, d, c in zip(f["n_heads"], f["n_kv_heads"], f["head_dim"], f["causal"])]
    coords = np.log2(np.column_stack([f["batch"], f["seq_len"]]).astype(float))
    lcoords = np.log2(np.column_stack([f["n_heads"], f["n_kv_heads"], f["head_dim"]]).astype(float))
    return CurveFit.fit(flops / gpu.flops_per_s("bf16"), bytes_ / gpu.hbm_bandwidth_bytes_per_s, occ,
                        f["time_s"], keys, coords, lcoords, LOCAL_BANDWIDTH, GLOBAL_BANDWIDTH)


def fit_decode(frame, gpu: GpuSpec) -> CurveFit:
    f = frame
    flops, bytes_ = decode_counts(f["batch"], f["context_len"], f["n_heads"], f["n_kv_heads"], f["head_dim"])
    occ = decode_occupancy(f["batch"], f["context_len"], f["n_kv_heads"], gpu)
    keys = [layout_key(h, kv, d) for h, kv, d in zip(f["n_heads"], f["n_kv_heads"], f["head_dim"])]
    coords = np.log2(np.column_stack([f["batch"], f["context_len"]]).astype(float))
    lcoords = np.log2(np.column_stack([f["n_heads"], f["n_kv_heads"], f["head_dim"]]).astype(float))
    return CurveFit.fit(flops / gpu.flops_per_s("bf16"), bytes_ / gpu.hbm_bandwidth_bytes_per_s, occ,
                        f["time_s"], keys, coords, lcoords, LOCAL_BANDWIDTH, GLOBAL_BANDWIDTH)


def predict_prefill_s(fit: CurveFit, gpu: GpuSpec, flops: float, bytes_: float, batch: float, seq_len: float,
                      n_heads: int, n_kv_heads: int, head_dim: int, causal: bool = True) -> tuple[float, bool]:
    """Seconds of one prefill attention call; FLOPs/bytes as the op counts them (chunked prefill too)."""
    occ = min(1.0, batch * n_heads * math.ceil(seq_len / PREFILL_TILE) / max(gpu.sm_count, 1))
    return fit.predict_s(flops / gpu.flops_per_s("bf16"), bytes_ / gpu.hbm_bandwidth_bytes_per_s, occ,
                         layout_key(n_heads, n_kv_heads, head_dim, causal), _logs(batch, seq_len),
                         _logs(n_heads, n_kv_heads, head_dim))


def predict_decode_s(fit: CurveFit, gpu: GpuSpec, flops: float, bytes_: float, batch: float, context_len: float,
                     n_heads: int, n_kv_heads: int, head_dim: int) -> tuple[float, bool]:
    occ = min(1.0, batch * n_kv_heads * math.ceil(context_len / DECODE_SPLIT) / max(gpu.sm_count, 1))
    return fit.predict_s(flops / gpu.flops_per_s("bf16"), bytes_ / gpu.hbm_bandwidth_bytes_per_s, occ,
                         layout_key(n_heads, n_kv_heads, head_dim), _logs(batch, context_len),
                         _logs(n_heads, n_kv_heads, head_dim))
