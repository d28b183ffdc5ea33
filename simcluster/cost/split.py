"""The fit / held-out split of measured tables: which rows a fit may see.

Held out are whole SHAPES the fit never sees, chosen by rule, never by random rows:
- gemm.csv: every 5th (n, k) projection family in sorted order (all its m and dtypes), and every
  off-grid shape (calibrate/shapes.py GEMM_OFF_GRID);
- gemm_misaligned.csv: nothing (its shapes are fit-side; the misaligned off-grid shapes of
  gemm.csv are the held-out check);
- attention_prefill.csv / attention_decode.csv and their _sdpa twins: within each head layout,
  every 4th point of the (batch, length) grid in sorted order;
- moe.csv: every 4th (tokens, imbalance) point of each expert layout;
- elementwise.csv: every 4th token count of each (op, hidden);
- collectives.csv: every 3rd message size of each (op, world size), the smallest and largest kept;
- train_kernels.csv: every size of each (op, impl) but the smallest and largest (interpolated);
- model_forward.csv and train_step.csv are never fitted: they are validation only (their host
  probes give the framework's host time, report/accuracy.py and training/validation.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPLIT_RULE = "shape-v1"
GEMM_FAMILY_STRIDE, GEMM_FAMILY_OFFSET = 5, 2
GRID_STRIDE, GRID_OFFSET = 4, 2
COLLECTIVE_STRIDE, COLLECTIVE_OFFSET = 3, 1
VALIDATION_ONLY = ("model_forward.csv", "train_step.csv")


def _every(frame: pd.DataFrame, group_cols: list[str], order_cols: list[str], stride: int, offset: int,
           keep_ends: bool = False) -> np.ndarray:
    """Boolean mask (in frame order) of every `stride`-th distinct point of each group."""
    held = np.zeros(len(frame), bool)
    for _, rows in frame.groupby(group_cols, sort=True):
        points = sorted(set(map(tuple, rows[order_cols].to_numpy().tolist())))
        chosen = {p for i, p in enumerate(points) if i % stride == offset
                  and not (keep_ends and i in (0, len(points) - 1))}
        pos = frame.index.get_indexer(rows.index)
        held[pos] = [tuple(r) in chosen for r in rows[order_cols].to_numpy().tolist()]
    return held


def gemm_heldout(frame: pd.DataFrame) -> np.ndarray:
    off_grid = (frame["source"] == "off_grid").to_numpy()
    families = sorted(set(zip(frame.loc[~off_grid, "n"], frame.loc[~off_grid, "k"])))
    held_families = {f for i, f in enumerate(families) if i % GEMM_FAMILY_STRIDE == GEMM_FAMILY_OFFSET}
    in_held = np.array([(n, k) in held_families for n, k in zip(frame["n"], frame["k"])], bool)
    return off_grid | in_held


def heldout_mask(name: str, frame: pd.DataFrame) -> np.ndarray:
    """True for the rows of measured file `name` the fit must not see."""
    if frame is None or len(frame) == 0:
        return np.zeros(0, bool)
    if name in VALIDATION_ONLY:
        return np.ones(len(frame), bool)
    if name == "gemm.csv":
        return gemm_heldout(frame)
    if name in ("attention_prefill.csv", "attention_prefill_sdpa.csv"):
        return _every(frame, ["n_heads", "n_kv_heads", "head_dim", "causal"], ["batch", "seq_len"], GRID_STRIDE, GRID_OFFSET)
    if name in ("attention_decode.csv", "attention_decode_sdpa.csv"):
        return _every(frame, ["n_heads", "n_kv_heads", "head_dim"], ["batch", "context_len"], GRID_STRIDE, GRID_OFFSET)
    if name == "moe.csv":
        return _every(frame, ["n_experts", "hidden", "expert_ffn"], ["tokens", "imbalance"], GRID_STRIDE, GRID_OFFSET)
    if name == "elementwise.csv":
        return _every(frame, ["op", "hidden"], ["tokens"], GRID_STRIDE, GRID_OFFSET)
    if name == "train_kernels.csv":
        return _every(frame, ["op", "impl"], ["elements"], 1, 0, keep_ends=True)
    if name == "collectives.csv":
        return _every(frame, ["op", "world_size"], ["bytes"], COLLECTIVE_STRIDE, COLLECTIVE_OFFSET, keep_ends=True)
    return np.zeros(len(frame), bool)
