"""Compute slowed by a collective running beside it on the same GPU (NCCL kernels hold SMs and
HBM bandwidth while a data-parallel all-reduce or an FSDP gather overlaps backward).

Measured by calibrate/overlap.py into profiles/measured/<gpu>/overlap.csv: a compute loop timed
alone and beside back-to-back collectives on a side stream; slowdown = concurrent / alone - 1.
The `layer_mix` workload (GEMM, elementwise, GEMM: a transformer layer's backward in miniature)
gives the slowdown κ a whole layer sees; the single-GEMM rows span 0.15-1.0 by shape (wave
quantisation when NCCL holds SMs) and are for inspection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from simcluster.cost.tables import measured_gpus, measured_root
from simcluster.hardware.gpu import load_gpu

# torch DDP's default gradient bucket (bucket_cap_mb=25): the all-reduce size that overlaps backward.
DDP_BUCKET_BYTES = 25 * 2**20
LAYER_WORKLOAD = "layer_mix"


class OverlapTableError(ValueError):
    """An overlap.csv that cannot be read as measurements."""


@dataclass(frozen=True)
class OverlapSlowdown:
    """κ and where it comes from: 'measured h200-sxm ws=2', 'transferred from h200-sxm ws=4', or
    'none' (nothing measured: κ = 0)."""

    slowdown: float
    source: str


def read_overlap(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    for col in ("world_size", "workload", "collective", "message_bytes", "slowdown"):
        if col not in frame.columns:
            raise OverlapTableError(f"{path}: missing column {col!r}")
    return frame


def _table_for(gpu: str) -> tuple[pd.DataFrame | None, str]:
    """This GPU's overlap table, else the nearest measured GPU's (calibrated.nearest_measured_gpu)."""
    from simcluster.cost.calibrated import nearest_measured_gpu
    own = measured_root() / gpu / "overlap.csv"
    if own.exists():
        return read_overlap(own), f"measured {gpu}"
    with_table = [load_gpu(n) for n in measured_gpus() if (measured_root() / n / "overlap.csv").exists()]
    try:
        near = nearest_measured_gpu(load_gpu(gpu), with_table)
    except (KeyError, ValueError, FileNotFoundError):
        near = min(with_table, key=lambda g: g.name) if with_table else None
    if near is None:
        return None, "none"
    return read_overlap(measured_root() / near.name / "overlap.csv"), f"transferred from {near.name}"


def overlap_slowdown(gpu: str, collectives: tuple[str, ...], world_size: int,
                     message_bytes: float = DDP_BUCKET_BYTES) -> OverlapSlowdown:
    """κ for a layer's compute beside `collectives` (the mean over them) among `world_size` GPUs:
    the layer_mix rows at the nearest measured world size and, per collective, the nearest message
    size (log scale)."""
    table, source = _table_for(gpu)
    if table is None:
        return OverlapSlowdown(0.0, "none")
    rows = table[(table.workload == LAYER_WORKLOAD) & table.collective.isin(collectives)]
    if rows.empty:
        return OverlapSlowdown(0.0, "none")
    ws = min(sorted(set(int(w) for w in rows.world_size)), key=lambda w: abs(math.log(w / world_size)))
    rows = rows[rows.world_size == ws]
    values = []
    for _, g in rows.groupby("collective", sort=True):
        near = g.iloc[(g.message_bytes.astype(float).map(lambda b: abs(math.log(b / message_bytes)))).argmin()]
        values.append(float(near.slowdown))
    return OverlapSlowdown(max(0.0, sum(values) / len(values)), f"{source} ws={ws}")
