"""CSV output: one file per measurement kind, header row first, one row per measurement.

Rows are flushed as they are written, so a sweep stopped by a time limit keeps what it measured.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

# The columns every consumer may rely on, in order; a writer may append more after them.
COLUMNS = {
    "gemm.csv": ["m", "n", "k", "dtype", "time_s", "source"],
    "gemm_misaligned.csv": ["m", "n", "k", "dtype", "time_s", "source"],
    "attention_prefill.csv": ["batch", "seq_len", "n_heads", "n_kv_heads", "head_dim", "causal",
                              "backend", "time_s"],
    "attention_decode.csv": ["batch", "context_len", "n_heads", "n_kv_heads", "head_dim",
                             "backend", "time_s"],
    "attention_prefill_sdpa.csv": ["batch", "seq_len", "n_heads", "n_kv_heads", "head_dim",
                                   "causal", "backend", "time_s"],
    "attention_decode_sdpa.csv": ["batch", "context_len", "n_heads", "n_kv_heads", "head_dim",
                                  "backend", "time_s"],
    "moe.csv": ["tokens", "n_experts", "top_k", "hidden", "expert_ffn", "imbalance", "time_s"],
    "router.csv": ["tokens", "n_experts", "top_k", "hidden", "time_s"],
    "elementwise.csv": ["op", "tokens", "hidden", "time_s"],
    "train_kernels.csv": ["op", "impl", "elements", "time_s"],
    "graph_gap.csv": ["chain", "n_kernels", "time_s", "kernel_s", "gap_per_kernel_s"],
    "launch.csv": ["mode", "n_kernels", "time_s"],
    "model_forward.csv": ["model", "phase", "batch", "seq_len", "context_len", "mode", "time_s"],
    "decode_kernels.csv": ["model", "batch", "context_len", "kernel", "calls_per_step", "time_s"],
    "kernel_switch.csv": ["chain", "op", "n_kernels", "time_s"],
    "memcpy.csv": ["direction", "pinned", "bytes", "time_s"],
    "collectives.csv": ["op", "world_size", "bytes", "dtype", "time_s", "algbw_bytes_per_s",
                        "busbw_bytes_per_s"],
    "p2p_bandwidth.csv": ["src", "dst", "bytes", "time_s", "bytes_per_s"],
    "train_step.csv": ["model", "strategy", "world_size", "micro_batch", "seq_len", "grad_accum",
                       "time_s", "peak_memory_bytes", "tokens_per_s"],
    # Every timed round of a train_step.csv point: its step and host issue time (slowest rank).
    "train_step_rounds.csv": ["model", "strategy", "world_size", "micro_batch", "seq_len", "round",
                              "time_s", "host_s"],
    # time_s repeats concurrent_s: the writer checks every table's time_s.
    "overlap.csv": ["world_size", "workload", "shape", "collective", "message_bytes", "alone_s",
                    "concurrent_s", "slowdown", "comm_alone_s", "comm_concurrent_s", "time_s"],
}

# Columns each writer appends after the required ones.
EXTRA_COLUMNS = {
    "gemm.csv": ["timing", "tflops"],
    "gemm_misaligned.csv": ["timing", "tflops"],
    "attention_prefill.csv": ["timing"],
    "attention_decode.csv": ["timing"],
    "attention_prefill_sdpa.csv": ["timing"],
    "attention_decode_sdpa.csv": ["timing"],
    "moe.csv": ["impl", "n_experts_total", "assignments", "dirichlet_alpha", "timing"],
    "router.csv": ["timing"],
    "elementwise.csv": ["impl", "timing"],
    "train_kernels.csv": ["bytes", "bytes_per_s", "timing"],
    "launch.csv": ["time_per_kernel_s"],
    "decode_kernels.csv": ["mode"],
    "model_forward.csv": ["n_layers", "gqa", "host_s", "time_ci_low_s", "time_ci_high_s", "timed_steps",
                          "device_compute_s", "kernels_per_step"],
    "kernel_switch.csv": ["time_per_kernel_s", "timing"],
    "memcpy.csv": ["bytes_per_s"],
    "collectives.csv": ["src", "dst"],
    "p2p_bandwidth.csv": ["method"],
    "train_step.csv": ["precision", "n_layers", "detail", "time_p10_s", "time_p90_s", "host_s",
                       "timed_steps", "host_forward_s", "host_backward_s", "host_optimizer_s",
                       "sm_clock_mhz", "device_compute_s", "device_comm_s", "kernels_per_step",
                       "time_ci_low_s", "time_ci_high_s"],
    "overlap.csv": ["comm_dtype", "overlap_fraction", "launches", "comm_calls", "timing"],
}


class TableError(ValueError):
    """A row that does not match its table's columns."""


class Table:
    """Append-only CSV file with a fixed header; `add(**row)` checks the keys and flushes."""

    def __init__(self, path: Path, append: bool = False, keep=None):
        self.path = Path(path)
        name = self.path.name
        if name not in COLUMNS:
            raise TableError(f"{name}: unknown table; expected one of {sorted(COLUMNS)}")
        self.columns = COLUMNS[name] + EXTRA_COLUMNS.get(name, [])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if keep is not None and self.path.exists():
            kept = [r for r in read_table(self.path) if keep(r)]
        fresh = not (append and self.path.exists())
        self._file = open(self.path, "w" if fresh else "a", newline="")
        self._writer = csv.writer(self._file)
        if fresh:
            self._writer.writerow(self.columns)
            for row in kept:
                self._writer.writerow([row.get(c, "") for c in self.columns])
            self._file.flush()
        self.rows = 0

    def add(self, **row) -> None:
        missing = [c for c in self.columns if c not in row]
        extra = [c for c in row if c not in self.columns]
        if missing or extra:
            raise TableError(f"{self.path.name}: row keys differ from columns; "
                             f"missing {missing}, unexpected {extra}")
        if not (row["time_s"] > 0 and math.isfinite(row["time_s"])):
            raise TableError(f"{self.path.name}: time_s must be positive and finite, "
                             f"got {row['time_s']!r}")
        self._writer.writerow([format_cell(row[c]) for c in self.columns])
        self._file.flush()
        self.rows += 1

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def format_cell(value) -> str:
    """Floats with 6 significant digits (timer resolution is far coarser), others as str."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return ""
    return str(value)


def read_table(path: Path) -> list[dict]:
    """The rows of a CSV written by `Table`, as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
