"""Predicting measured training steps (profiles/measured/<gpu>/train_step.csv, written by
calibrate/train_step.py) and fitting the eager-framework overheads on a fit split.

Each row is one (model, strategy, world size, micro-batch, sequence) point of a plain-torch Llama
under bf16 autocast over fp32 weights with torch's AdamW (foreach or fused, from the precision
column). Strategies map to plans:
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
    # One traffic class per link in these runs (gradients for ddp, activations for pp), so the
    # first-come-first-served link model equals the shared one and costs no event per bucket.
    foreach = "foreach" in str(getattr(row, "precision", "foreach"))
    options = {"optimizer_impl": "foreach" if foreach else "fused", "persistent_grads": s in ("ddp", "pp"),
               "link_model": "fifo", "keep_pipeline_outputs": s == "pp"}
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


def predict_row(row, gpu: str, cm: CostModel, overheads: FrameworkOverheads | None = None,
                memo: dict | None = None) -> dict:
    """Predicted time_s and peak_memory_bytes of one measured row, beside the measured figures."""
    plan, options = plan_for_row(row, gpu)
    r = simulate_training(row_llm(row), plan, cm, overheads=overheads, memo=memo, **options)
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
    """FrameworkOverheads from the fit rows of one strategy (deterministic grid searches):
    memory_reserve_bytes = median residual of peak memory; host_s_per_layer minimises the squared
    relative time errors on a 1 ms then a 0.05 ms grid; for strategies with bucketed gradient
    collectives (ddp) overlap_slowdown on a 0.1 grid in [0, 2]; when the fit rows hold models of
    two or more depths, host_s_per_step on a 1 ms grid in [0, 30 ms]; then the host refined."""
    memo: dict = {}
    base = [predict_row(r, gpu, cm, memo=memo) for r in rows.itertuples()]
    residual = sorted(b["measured_peak_memory_bytes"] - b["predicted_peak_memory_bytes"] for b in base)
    reserve = max(0.0, residual[len(residual) // 2])

    def loss(host_s: float, kappa: float, step_s: float) -> float:
        oh = FrameworkOverheads(host_s, reserve, kappa, step_s)
        return sum(predict_row(r, gpu, cm, oh, memo)["time_error"] ** 2 for r in rows.itertuples())

    def refine(kappa: float, step_s: float, around: float | None = None) -> float:
        coarse = around if around is not None else min(
            (i * 1e-3 for i in range(int(max_host_s / 1e-3) + 1)), key=lambda h: loss(h, kappa, step_s))
        return min((max(0.0, coarse + (i - 20) * 0.05e-3) for i in range(41)), key=lambda h: loss(h, kappa, step_s))

    host, kappa, step = refine(0.0, 0.0), 0.0, 0.0
    if set(rows["strategy"]) == {"ddp"}:
        kappa = min((i * 0.1 for i in range(21)), key=lambda k: loss(host, k, step))
    if rows["model"].map(lambda m: row_llm(next(rows[rows.model == m].itertuples())).n_layers).nunique() > 1:
        step = min((i * 1e-3 for i in range(31)), key=lambda t: loss(host, kappa, t))
        host = refine(kappa, step)
    elif kappa:
        host = refine(kappa, step, around=host)
    return FrameworkOverheads(host, reserve, kappa, step)


def fit_overheads(rows: pd.DataFrame, gpu: str, cm: CostModel) -> Fit:
    """One FrameworkOverheads per strategy present in the fit rows."""
    return Fit({s: fit_strategy(g, gpu, cm) for s, g in rows.groupby("strategy", sort=True)}, len(rows))
