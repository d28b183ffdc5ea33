"""Calibration: every fitted family of one GPU, fitted from its measured tables, saved to and
loaded from profiles/measured/<gpu>/fit.json (with the sha256 of each source file, so a fit older
than its tables is noticed and redone).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simcluster.cost.attention_fit import fit_decode, fit_prefill
from simcluster.cost.collectives_fit import CollectiveCurve, fit_collectives
from simcluster.cost.curve_fit import CurveFit
from simcluster.cost.elementwise_fit import fit_elementwise
from simcluster.cost.gemm_fit import GemmDtypeFit, fit_gemm
from simcluster.cost.moe_fit import fit_moe
from simcluster.cost.streaming_fit import fit_streaming
from simcluster.cost.split import SPLIT_RULE, VALIDATION_ONLY, heldout_mask
from simcluster.cost.tables import MeasuredTables, folder_sha256, load_tables, measured_root
from simcluster.hardware.gpu import GpuSpec

FIT_FILE = "fit.json"
FORMAT = 1


class FitFileError(ValueError):
    """A fit.json that cannot be read back."""


@dataclass
class Calibration:
    """Fitted families of one GPU. Any family may be absent (None / empty) when not measured."""

    gpu: str
    gemm: dict[str, GemmDtypeFit] = field(default_factory=dict)
    prefill: CurveFit | None = None
    decode: CurveFit | None = None
    moe: CurveFit | None = None
    elementwise: dict[str, CurveFit] = field(default_factory=dict)
    # 'eager' / 'cuda_graph' -> s per kernel launch; 'switch' -> s an op adds after another kind
    launch_s: dict[str, float] = field(default_factory=dict)
    collectives: dict[tuple[str, int], CollectiveCurve] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    # Attention through torch's default SDPA dispatch (Implementation.attention == 'sdpa').
    prefill_sdpa: CurveFit | None = None
    decode_sdpa: CurveFit | None = None
    # Training's streaming kernels (streaming_fit.py): kernel -> [(bytes, bytes_per_s), ...].
    streaming: dict[str, list] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "format": FORMAT, "gpu": self.gpu, "provenance": self.provenance,
            "gemm": {d: f.to_json() for d, f in self.gemm.items()},
            "attention_prefill": self.prefill.to_json() if self.prefill else None,
            "attention_decode": self.decode.to_json() if self.decode else None,
            "moe": self.moe.to_json() if self.moe else None,
            "elementwise": {op: f.to_json() for op, f in self.elementwise.items()},
            "launch_s": self.launch_s,
            "collectives": [c.to_json() for c in self.collectives.values()],
            "attention_prefill_sdpa": self.prefill_sdpa.to_json() if self.prefill_sdpa else None,
            "attention_decode_sdpa": self.decode_sdpa.to_json() if self.decode_sdpa else None,
            "streaming": {k: [list(p) for p in v] for k, v in self.streaming.items()},
        }

    @classmethod
    def from_json(cls, d: dict) -> "Calibration":
        def opt(x):
            return CurveFit.from_json(x) if x else None
        curves = [CollectiveCurve.from_json(c) for c in d.get("collectives", [])]
        return cls(d["gpu"], {k: GemmDtypeFit.from_json(v) for k, v in d.get("gemm", {}).items()},
                   opt(d.get("attention_prefill")), opt(d.get("attention_decode")), opt(d.get("moe")),
                   {k: CurveFit.from_json(v) for k, v in d.get("elementwise", {}).items()},
                   dict(d.get("launch_s", {})), {(c.op, c.world_size): c for c in curves}, d.get("provenance", {}),
                   opt(d.get("attention_prefill_sdpa")), opt(d.get("attention_decode_sdpa")),
                   {k: [tuple(p) for p in v] for k, v in d.get("streaming", {}).items()})


def launch_per_kernel_s(frame) -> dict[str, float]:
    """Seconds per kernel of each launch mode: the slope of chain time over chain length
    (least squares), so the fixed cost of one synchronize is not charged to every kernel."""
    out = {}
    for mode, rows in frame.groupby("mode", sort=True):
        n, t = rows["n_kernels"].to_numpy(float), rows["time_s"].to_numpy(float)
        if len(rows) >= 2 and np.ptp(n) > 0:
            slope = float(np.polyfit(n, t, 1)[0])
            if slope > 0:
                out[str(mode)] = slope
    return out


NO_KERNEL_S = 1e-7          # no CUDA kernel, launched from a graph, completes faster


def switch_s(frame) -> float | None:
    """Per-kernel time of the mixed chain minus the mean of the single-op chains (kernel_switch.csv),
    at least 0; None without both.  A single-op chain under NO_KERNEL_S a kernel launched nothing
    (the first tables' 'copy' chain copied a buffer onto itself) and is left out."""
    per = frame["time_s"].to_numpy(float) / frame["n_kernels"].to_numpy(float)
    mixed = per[(frame["chain"] == "mixed").to_numpy()]
    same = per[(frame["chain"] == "same").to_numpy() & (per >= NO_KERNEL_S)]
    if len(mixed) == 0 or len(same) == 0:
        return None
    return max(0.0, float(np.mean(mixed) - np.mean(same)))


def graph_gaps(frame) -> dict[str, float]:
    """graph_gap.csv's chains as LaunchOverhead fields: the small-kernel chain's gap per kernel
    ('graph_gap'), the decode-layer chain's (led by its projection GEMMs: 'graph_gap_large')."""
    names = {"small_elementwise": "graph_gap", "decode_layer": "graph_gap_large"}
    return {names[c]: max(0.0, float(g)) for c, g in zip(frame["chain"], frame["gap_per_kernel_s"]) if c in names}


def fit_calibration(tables: MeasuredTables, gpu: GpuSpec, split: str = "all") -> Calibration:
    """Fit every family from `tables`. split 'all' uses every microbenchmark row; 'fit' leaves out
    the held-out shapes of cost/split.py. Whole-model and training rows are never used."""
    if split not in ("all", "fit"):
        raise ValueError(f"split must be 'all' or 'fit', got {split!r}")

    def rows(name):
        frame = tables.get(name)
        if frame is None or len(frame) == 0 or name in VALIDATION_ONLY:
            return None
        if split == "fit":
            frame = frame[~heldout_mask(name, frame)]
        return frame if len(frame) else None

    cal = Calibration(gpu.name)
    if (f := rows("gemm.csv")) is not None:
        cal.gemm = fit_gemm(f, gpu, rows("gemm_misaligned.csv"))
    if (f := rows("attention_prefill.csv")) is not None:
        cal.prefill = fit_prefill(f, gpu)
    if (f := rows("attention_decode.csv")) is not None:
        cal.decode = fit_decode(f, gpu)
    if (f := rows("attention_prefill_sdpa.csv")) is not None:
        cal.prefill_sdpa = fit_prefill(f, gpu)
    if (f := rows("attention_decode_sdpa.csv")) is not None:
        cal.decode_sdpa = fit_decode(f, gpu)
    if (f := rows("moe.csv")) is not None:
        cal.moe = fit_moe(f, gpu)
    if (f := rows("elementwise.csv")) is not None:
        cal.elementwise = fit_elementwise(f, gpu)
    if (f := rows("launch.csv")) is not None:
        cal.launch_s = launch_per_kernel_s(f)
    if (f := rows("kernel_switch.csv")) is not None and (s := switch_s(f)) is not None:
        cal.launch_s["switch"] = s
    if (f := rows("graph_gap.csv")) is not None:
        cal.launch_s.update(graph_gaps(f))
    if (f := rows("collectives.csv")) is not None:
        cal.collectives = fit_collectives(f)
    if (f := rows("train_kernels.csv")) is not None:
        cal.streaming = fit_streaming(f)
    cal.provenance = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gpu": gpu.name, "split": split, "split_rule": SPLIT_RULE,
        "sources_sha256": {n: s for n, s in tables.sources_sha256().items() if n not in VALIDATION_ONLY},
    }
    return cal


def write_fit(cal: Calibration, folder: Path) -> Path:
    path = Path(folder) / FIT_FILE
    path.write_text(json.dumps(cal.to_json(), indent=1, sort_keys=True) + "\n")
    return path


def read_fit(path: Path) -> Calibration:
    try:
        return Calibration.from_json(json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise FitFileError(f"{path}: not a simcluster fit file ({type(err).__name__}: {err})") from None


def load_calibration(gpu: GpuSpec, folder: Path | None = None) -> Calibration | None:
    """This GPU's calibration fitted on all rows: fit.json when it matches the CSVs it was fitted
    from (checked by sha256, without parsing them), else a fresh fit (not written back). None
    when no measured tables exist."""
    folder = Path(folder) if folder is not None else measured_root() / gpu.name
    path = folder / FIT_FILE
    if path.is_file():
        try:
            cal = read_fit(path)
        except FitFileError:
            cal = None
        wanted = {n: s for n, s in folder_sha256(folder).items() if n not in VALIDATION_ONLY}
        if cal is not None and cal.provenance.get("split") == "all" \
                and cal.provenance.get("sources_sha256") == wanted:
            return cal
    tables = load_tables(gpu.name, folder)
    if not tables.frames:
        return None
    return fit_calibration(tables, gpu, "all")
