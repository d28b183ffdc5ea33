"""Predicting measured training steps (profiles/measured/<gpu>/train_step.csv, written by
calibrate/train_step.py) and fitting the eager-framework overheads on a fit split.

Each row is one (model, strategy, world size, micro-batch, sequence) point of a plain-torch Llama
under bf16 autocast over fp32 weights with torch's foreach AdamW. Strategies map to plans:
single → one GPU; ddp → dp = world (buckets persist: gradient_as_bucket_view); fsdp → ZeRO-3
over world (FSDP2, bf16 gathers, fp32 reduce-scatter); tp → tp = world; pp → pp = world, 1F1B,
grad_accum micro-batches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from simcluster import catalog
from simcluster.cost.model import CostModel
from simcluster.llm.spec import LlmSpec, load_llm
from simcluster.training.overheads import FrameworkOverheads
from simcluster.training.plan import TrainingPlan
from simcluster.training.simulate import simulate_training

COLUMNS = ("model", "strategy", "world_size", "micro_batch", "seq_len", "grad_accum", "time_s",
           "peak_memory_bytes")
STRATEGIES = ("single", "ddp", "fsdp", "tp", "pp")


class MeasurementError(ValueError):
    """A train_step.csv that cannot be read as measurements."""


def measured_path(gpu: str) -> Path:
    return catalog.profiles_dir() / "measured" / gpu / "train_step.csv"


def read_measurements(path: str | Path) -> pd.DataFrame:
    """The rows of a train_step.csv; MeasurementError names the file and the missing column / bad strategy."""
    path = Path(path)
    frame = pd.read_csv(path)
    for col in COLUMNS:
        if col not in frame.columns:
            raise MeasurementError(f"{path}: missing column {col!r}")
    bad = sorted(set(frame["strategy"]) - set(STRATEGIES))
    if bad:
        raise MeasurementError(f"{path}: column 'strategy': unknown {bad[0]!r}; expected one of {STRATEGIES}")
    return frame


def plan_for_row(row, gpu: str) -> tuple[TrainingPlan, dict]:
    """The TrainingPlan a measured row ran, and the simulate_training options matching its framework."""
    ws, s = int(row.world_size), str(row.strategy)
    deg = {"single": {}, "ddp": {"dp": ws}, "fsdp": {"dp": ws, "zero": 3}, "tp": {"tp": ws},
           "pp": {"pp": ws}}[s]
    dp = deg.get("dp", 1)
    # The DTensor TP plan parallelises the blocks only: embedding and LM head stay replicated.
    plan = TrainingPlan(gpu=gpu, n_gpus=ws, seq_len=int(row.seq_len), micro_batch=int(row.micro_batch),
                        global_batch=int(row.micro_batch) * int(row.grad_accum) * dp,
                        param_dtype="fp32", grad_dtype="fp32", master_weights=False,
                        vocab_parallel=s != "tp", **deg)
    options = {"optimizer_impl": "foreach", "persistent_grads": s in ("ddp", "pp")}
    return plan, options


def row_llm(row) -> LlmSpec:
    """The row's LLM; a name like 'llama-3.2-1b-4l' is the catalog model cut to n_layers layers."""
    name = str(row.model)
    m = re.fullmatch(r"(.+)-(\d+)l", name)
    if m and m.group(1) in catalog.names("llms"):
        return replace(load_llm(m.group(1)), name=name, n_layers=int(m.group(2)))
    spec = load_llm(name)
    n = getattr(row, "n_layers", None)
    return replace(spec, n_layers=int(n)) if n and int(n) != spec.n_layers else spec


def predict_row(row, gpu: str, cm: CostModel, overheads: FrameworkOverheads | None = None) -> dict:
    """Predicted time_s and peak_memory_bytes of one measured row, beside the measured figures."""
    plan, options = plan_for_row(row, gpu)
    r = simulate_training(row_llm(row), plan, cm, overheads=overheads, **options)
    return {"model": row.model, "strategy": row.strategy, "world_size": int(row.world_size),
            "micro_batch": int(row.micro_batch), "seq_len": int(row.seq_len),
            "measured_time_s": float(row.time_s), "predicted_time_s": r.time_s,
            "time_error": r.time_s / float(row.time_s) - 1.0,
            "measured_peak_memory_bytes": float(row.peak_memory_bytes),
            "predicted_peak_memory_bytes": r.peak_memory_bytes,
            "memory_error": r.peak_memory_bytes / float(row.peak_memory_bytes) - 1.0}


@dataclass(frozen=True)
class Fit:
    overheads: dict[str, FrameworkOverheads]     # per strategy: each wrapper has its own host cost
    fit_rows: int


def fit_strategy(rows: pd.DataFrame, gpu: str, cm: CostModel, max_host_s: float = 30e-3) -> FrameworkOverheads:
    """FrameworkOverheads from the fit rows of one strategy: memory_reserve_bytes = median residual of
    peak memory; host_s_per_layer = the value minimising the squared relative time errors, searched
    on a 1 ms grid and refined on a 0.05 ms grid around the best point (deterministic)."""
    base = [predict_row(r, gpu, cm) for r in rows.itertuples()]
    residual = sorted(b["measured_peak_memory_bytes"] - b["predicted_peak_memory_bytes"] for b in base)
    reserve = max(0.0, residual[len(residual) // 2])

    def loss(host_s: float) -> float:
        oh = FrameworkOverheads(host_s, reserve)
        return sum(predict_row(r, gpu, cm, oh)["time_error"] ** 2 for r in rows.itertuples())

    coarse = min((i * 1e-3 for i in range(int(max_host_s / 1e-3) + 1)), key=loss)
    fine = min((max(0.0, coarse + (i - 20) * 0.05e-3) for i in range(41)), key=loss)
    return FrameworkOverheads(fine, reserve)


def fit_overheads(rows: pd.DataFrame, gpu: str, cm: CostModel) -> Fit:
    """One FrameworkOverheads per strategy present in the fit rows."""
    return Fit({s: fit_strategy(g, gpu, cm) for s, g in rows.groupby("strategy", sort=True)}, len(rows))
