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

import math
import re
from dataclasses import replace
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


# A row of at most this many tokens per micro-batch is a host probe (calibrate/train_step.py):
# the GPU has almost nothing to do, so the step time is the framework's host time.
PROBE_TOKENS = 256
# The fit split: the Llama-3.2-1B family (16 layers and its 4-layer cut). Every other model's rows
# (Llama-3.2-3B) are held out: nothing is fitted on them.
FIT_MODELS = ("llama-3.2-1b", "llama-3.2-1b-4l")
# A row whose predicted device-only time is below this share of its measured step is host-bound.
HOST_BOUND_DEVICE_SHARE = 0.5
# Candidate issue exponents (overheads.pass_time_s): inf = max(host, device).
ISSUE_EXPONENTS = (math.inf, 12.0, 8.0, 6.0, 4.0, 3.0, 2.0)


def is_fit_row(row) -> bool:
    return str(row.model) in FIT_MODELS


def is_probe(row) -> bool:
    return int(row.micro_batch) * int(row.seq_len) <= PROBE_TOKENS


def _host_from_probes(probes: list, gpu: str, cm: CostModel, reserve: float, memo: dict,
                      exponent: float = math.inf) -> tuple[float, float]:
    """(host_s_per_layer, host_s_per_step) that reproduce the probe rows' step times.

    At a probe the step is host-bound, so its predicted time is linear in both host figures:
    linearise around a host-bound guess (finite differences), solve the least-squares system of
    the probes (two or more depths), and repeat from the solution (a probe that turns out partly
    device-bound moves the kinks)."""
    import numpy as np

    def times(layer_s: float, step_s: float) -> np.ndarray:
        oh = FrameworkOverheads(layer_s, reserve, 0.0, step_s, exponent)
        return np.array([predict_row(r, gpu, cm, oh, memo)["predicted_time_s"] for r in probes])

    measured = np.array([float(r.time_s) for r in probes])
    x = np.array([5e-3, 20e-3])
    for _ in range(3):
        base = times(*x)
        d = 1e-3
        jac = np.stack([(times(x[0] + d, x[1]) - base) / d, (times(x[0], x[1] + d) - base) / d], axis=1)
        # Relative errors weigh the shallow and the deep probe alike.
        w = 1.0 / measured
        step, *_ = np.linalg.lstsq(jac * w[:, None], (measured - base) * w, rcond=None)
        x = np.maximum(0.0, x + step)
    return float(x[0]), float(x[1])


def memory_reserve_bytes(base: list[dict], steps: int = 400) -> float:
    """The non-negative reserve that minimises the largest relative peak-memory error over the rows
    predicted without one (peaks grow one for one with the reserve): the rows' peaks are set by
    different moments of the step (end of backward at few tokens, start of backward at many), so
    one constant is placed to keep both regimes closest."""
    meas = [b["measured_peak_memory_bytes"] for b in base]
    pred = [b["predicted_peak_memory_bytes"] for b in base]
    top = max(0.0, max(m - q for m, q in zip(meas, pred)))
    return min((top * i / steps for i in range(steps + 1)),
               key=lambda r: max(abs(q + r - m) / m for m, q in zip(meas, pred)))


def fit_strategy(rows: pd.DataFrame, gpu: str, cm: CostModel, max_host_s: float = 30e-3,
                 overlap_slowdown: float | None = None, issue_exponent: float = math.inf) -> FrameworkOverheads:
    """FrameworkOverheads from the fit rows of one strategy at one world size (deterministic).

    memory_reserve_bytes: memory_reserve_bytes over the fit rows. Host time: where the
    rows hold host probes (PROBE_TOKENS) at two or more depths, host_s_per_layer and
    host_s_per_step are solved from the probes and the other host-bound rows (predicted device
    time under HOST_BOUND_DEVICE_SHARE of the measured step: the same host time, more samples of
    it; never a row where the device sets the time);
    otherwise host_s_per_layer minimises the squared relative time errors on a 1 ms then a 0.05 ms
    grid, and, when the rows hold models of two or more depths, host_s_per_step on a 1 ms grid in
    [0, 30 ms]. overlap_slowdown: as given (fit_overheads shares one per strategy), else for
    strategies with bucketed gradient collectives (ddp) on a 0.1 grid in [0, 2] over the rows that
    are not probes."""
    memo: dict = {}
    base = [predict_row(r, gpu, cm, memo=memo) for r in rows.itertuples()]
    reserve = memory_reserve_bytes(base)
    depth = {m: row_llm(next(rows[rows.model == m].itertuples())).n_layers for m in set(rows.model)}
    probes = [r for r in rows.itertuples() if is_probe(r)]
    if len({depth[r.model] for r in probes}) >= 2:
        # Other rows where the GPU is mostly idle measure the same host time: more samples of it.
        probes += [r for r, b in zip(rows.itertuples(), base) if not is_probe(r)
                   and b["predicted_time_s"] < HOST_BOUND_DEVICE_SHARE * float(r.time_s)]
    timed = [r for r in rows.itertuples() if not is_probe(r)] or list(rows.itertuples())
    ddp = set(rows["strategy"]) == {"ddp"}

    def loss(host_s: float, kappa: float, step_s: float, subset=None) -> float:
        oh = FrameworkOverheads(host_s, reserve, kappa, step_s, issue_exponent)
        return sum(predict_row(r, gpu, cm, oh, memo)["time_error"] ** 2 for r in (subset or rows.itertuples()))

    def best_kappa(host_s: float, step_s: float, subset=None) -> float:
        if overlap_slowdown is not None or not ddp:
            return overlap_slowdown or 0.0
        return min((i * 0.1 for i in range(21)), key=lambda k: loss(host_s, k, step_s, subset))

    if len({depth[r.model] for r in probes}) >= 2:
        host, step = _host_from_probes(probes, gpu, cm, reserve, memo, issue_exponent)
        return FrameworkOverheads(host, reserve, best_kappa(host, step, timed), step, issue_exponent)

    def refine(kappa: float, step_s: float, around: float | None = None) -> float:
        coarse = around if around is not None else min(
            (i * 1e-3 for i in range(int(max_host_s / 1e-3) + 1)), key=lambda h: loss(h, kappa, step_s))
        return min((max(0.0, coarse + (i - 20) * 0.05e-3) for i in range(41)), key=lambda h: loss(h, kappa, step_s))

    host, step = refine(0.0, 0.0), 0.0
    kappa = best_kappa(host, step)
    if len(set(depth.values())) > 1:
        step = min((i * 1e-3 for i in range(31)), key=lambda t: loss(host, kappa, t))
        host = refine(kappa, step)
    elif kappa:
        host = refine(kappa, step, around=host)
    return FrameworkOverheads(host, reserve, kappa, step, issue_exponent)


def fit_overheads(rows: pd.DataFrame, gpu: str, cm: CostModel) -> dict[tuple[str, int], FrameworkOverheads]:
    """FrameworkOverheads per (strategy, world size) of the fit rows. Host time and memory are per
    world size (each has its own probes: fit_strategy). Two figures describe the framework rather
    than the group, so each strategy has one over all its world sizes, chosen to minimise the
    squared relative time errors of the rows that are not probes: issue_exponent on ISSUE_EXPONENTS
    (how host and device stall each other near balance; the probes are re-solved for each) and,
    for ddp, jointly the overlap slowdown on the 0.1 grid in [0, 2]."""
    out: dict[tuple[str, int], FrameworkOverheads] = {}
    for strategy, by_strategy in rows.groupby("strategy", sort=True):
        groups = {int(ws): g for ws, g in by_strategy.groupby("world_size", sort=True)}
        timed = [(ws, r) for ws, g in groups.items() for r in g.itertuples() if not is_probe(r)]
        memo: dict = {}

        def loss(fits: dict) -> float:
            return sum(predict_row(r, gpu, cm, fits[ws], memo)["time_error"] ** 2 for ws, r in timed)

        kappas = [i * 0.1 for i in range(21)] if strategy == "ddp" else [0.0]
        candidates = []
        for p in ISSUE_EXPONENTS:
            solved = {ws: fit_strategy(g, gpu, cm, overlap_slowdown=0.0, issue_exponent=p) for ws, g in groups.items()}
            candidates += [{ws: replace(f, overlap_slowdown=k) for ws, f in solved.items()} for k in kappas]
        fits = min(candidates, key=loss)
        out.update({(str(strategy), ws): f for ws, f in fits.items()})
    return out
