"""Measured tables: the CSVs `calibrate/` writes into profiles/measured/<gpu>/, read and checked.

One row per measurement, median seconds (see calibrate/table.py for the writer). Only the columns
simcluster relies on are checked; a writer may append more.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from simcluster import catalog

# file -> (column, kind) the cost model reads; kind 'num' must parse as a finite number.
REQUIRED: dict[str, tuple[tuple[str, str], ...]] = {
    "gemm.csv": (("m", "num"), ("n", "num"), ("k", "num"), ("dtype", "str"), ("time_s", "num"),
                 ("source", "str")),
    # bf16 shapes with k or n off 16-byte alignment (fit side only; calibrate/gemm.py).
    "gemm_misaligned.csv": (("m", "num"), ("n", "num"), ("k", "num"), ("dtype", "str"), ("time_s", "num")),
    "attention_prefill.csv": (("batch", "num"), ("seq_len", "num"), ("n_heads", "num"),
                              ("n_kv_heads", "num"), ("head_dim", "num"), ("causal", "bool"),
                              ("time_s", "num")),
    "attention_decode.csv": (("batch", "num"), ("context_len", "num"), ("n_heads", "num"),
                             ("n_kv_heads", "num"), ("head_dim", "num"), ("time_s", "num")),
    # The same grids through SDPA with torch's default backend choice (calibrate/attention_sdpa.py).
    "attention_prefill_sdpa.csv": (("batch", "num"), ("seq_len", "num"), ("n_heads", "num"),
                                   ("n_kv_heads", "num"), ("head_dim", "num"), ("causal", "bool"),
                                   ("time_s", "num")),
    "attention_decode_sdpa.csv": (("batch", "num"), ("context_len", "num"), ("n_heads", "num"),
                                  ("n_kv_heads", "num"), ("head_dim", "num"), ("time_s", "num")),
    "moe.csv": (("tokens", "num"), ("n_experts", "num"), ("top_k", "num"), ("hidden", "num"),
                ("expert_ffn", "num"), ("imbalance", "num"), ("time_s", "num")),
    "router.csv": (("tokens", "num"), ("n_experts", "num"), ("top_k", "num"), ("hidden", "num"),
                   ("time_s", "num")),
    "elementwise.csv": (("op", "str"), ("tokens", "num"), ("hidden", "num"), ("time_s", "num")),
    "train_kernels.csv": (("op", "str"), ("impl", "str"), ("elements", "num"), ("time_s", "num"), ("bytes", "num")),
    "launch.csv": (("mode", "str"), ("n_kernels", "num"), ("time_s", "num")),
    "kernel_switch.csv": (("chain", "str"), ("op", "str"), ("n_kernels", "num"), ("time_s", "num")),
    "graph_gap.csv": (("chain", "str"), ("n_kernels", "num"), ("time_s", "num"), ("gap_per_kernel_s", "num")),
    "memcpy.csv": (("direction", "str"), ("bytes", "num"), ("time_s", "num")),
    "model_forward.csv": (("model", "str"), ("phase", "str"), ("batch", "num"), ("seq_len", "num"),
                          ("context_len", "num"), ("mode", "str"), ("time_s", "num")),
    "collectives.csv": (("op", "str"), ("world_size", "num"), ("bytes", "num"), ("time_s", "num")),
    "p2p_bandwidth.csv": (("bytes", "num"), ("time_s", "num")),
    "train_step.csv": (("model", "str"), ("strategy", "str"), ("world_size", "num"),
                       ("micro_batch", "num"), ("seq_len", "num"), ("time_s", "num")),
}


class MeasuredTableError(ValueError):
    """A measured CSV that lacks a column or holds a value of the wrong kind."""


@dataclass(frozen=True)
class MeasuredTables:
    """The measured CSVs of one GPU type, as pandas frames keyed by file name."""

    gpu: str
    folder: Path
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)

    def get(self, name: str) -> pd.DataFrame | None:
        """The frame of `name` (e.g. 'gemm.csv'), or None when the file was not measured."""
        return self.frames.get(name)

    def has(self, name: str) -> bool:
        frame = self.frames.get(name)
        return frame is not None and len(frame) > 0

    def sources_sha256(self) -> dict[str, str]:
        """sha256 of every file read: fit.json records them, so a stale fit is detected."""
        return {name: file_sha256(self.folder / name) for name in sorted(self.frames)}


def folder_sha256(folder: Path) -> dict[str, str]:
    """sha256 of every known measured CSV in `folder`, without parsing them (a fit.json check)."""
    folder = Path(folder)
    return {name: file_sha256(folder / name) for name in sorted(REQUIRED) if (folder / name).is_file()}


def measured_root() -> Path:
    return catalog.profiles_dir() / "measured"


def measured_gpus(root: Path | None = None) -> list[str]:
    """GPU names with a measured folder that holds at least gemm.csv, sorted."""
    root = root or measured_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "gemm.csv").is_file())


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _check_column(frame: pd.DataFrame, path: Path, column: str, kind: str) -> pd.Series:
    if column not in frame.columns:
        raise MeasuredTableError(f"{path}: missing column {column!r}; expected columns "
                                 f"{[c for c, _ in REQUIRED[path.name]]}")
    col = frame[column]
    if kind == "num":
        values = pd.to_numeric(col, errors="coerce")
        bad = ~np.isfinite(values.to_numpy(float))
        if bad.any():
            row = int(bad.nonzero()[0][0]) + 2      # +1 header, +1 one-based
            raise MeasuredTableError(f"{path}: row {row} column {column!r}: expected a number, "
                                     f"got {col.iloc[row - 2]!r}")
        return values.astype(float)
    if kind == "bool":
        text = col.astype(str).str.strip().str.lower()
        bad = ~text.isin(["true", "false", "1", "0"])
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0]) + 2
            raise MeasuredTableError(f"{path}: row {row} column {column!r}: expected true or "
                                     f"false, got {col.iloc[row - 2]!r}")
        return text.isin(["true", "1"])
    return col.astype(str).str.strip()


def read_measured_csv(path: Path) -> pd.DataFrame:
    """One measured CSV with its required columns typed; MeasuredTableError names file, row, column."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise MeasuredTableError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    except pd.errors.EmptyDataError:
        raise MeasuredTableError(f"{path}: empty file; expected a header row") from None
    for column, kind in REQUIRED.get(path.name, ()):
        frame[column] = _check_column(frame, path, column, kind)
    if "time_s" in frame.columns and len(frame) and (frame["time_s"] <= 0).any():
        row = int((frame["time_s"] <= 0).to_numpy().nonzero()[0][0]) + 2
        raise MeasuredTableError(f"{path}: row {row} column 'time_s': expected a positive time")
    return frame


def load_tables(gpu: str, folder: Path | None = None) -> MeasuredTables:
    """Every known CSV in profiles/measured/<gpu>/ (or `folder`); missing files are simply absent."""
    folder = Path(folder) if folder is not None else measured_root() / gpu
    frames = {}
    for name in REQUIRED:
        path = folder / name
        if path.is_file():
            frames[name] = read_measured_csv(path)
    return MeasuredTables(gpu, folder, frames)
