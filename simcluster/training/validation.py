"""Predicting measured training steps (profiles/measured/<gpu>/train_step.csv, written by
calibrate/train_step.py) and fitting the eager-framework overheads on the probes only.

The split is what a user would make on their own cluster: the host probes (1 x 128 tokens, every
model measured: is_probe) and the balance probes of TP and FSDP (is_balance_probe) are calibration
instruments, the only rows anything is fitted on; every other row, of every model, strategy and
world size, is held out and only scored (issue #5).

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
from simcluster.cost.overlap import overlap_slowdown
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


# The split (issue #5), as a user would make it on their own cluster. A row of at most this many
# tokens per micro-batch is a host probe (calibrate/train_step.py: 1 x 128 tokens): the GPU has
# almost nothing to do, so the step time is the framework's host time. The probes, of every model
# measured (Llama-3.2-1B, its 4-layer cut and Llama-3.2-3B), are the calibration instruments and
# the only rows anything is fitted on; every other row, of every model, strategy and world size, is
# held out and only scored.
PROBE_TOKENS = 256
# How host and device stall each other near balance (overheads.pass_time_s). A host probe cannot
# tell (its device time is next to nothing): inf = max(host, device), a launch queue that always
# keeps the slower side busy. Tensor parallelism and FSDP, whose collectives inside every layer's
# forward (TP's all-reduces, FSDP's all-gathers) make the ranks' hosts and devices wait on each
# other, have a balance probe instead (calibrate/train_step.py BALANCE_PROBES: Llama-3.2-1B where
# host and device times meet: TP 3 x 4096 tokens, FSDP 5 x 1024), a calibration row like the host
# probes: the exponent is the one of EXPONENT_GRID that reproduces it best.
ISSUE_EXPONENT = math.inf
BALANCE_PROBES = {("tp", "llama-3.2-1b", 3, 4096), ("fsdp", "llama-3.2-1b", 5, 1024)}
EXPONENT_GRID = tuple(1.0 + 0.25 * i for i in range(1, 29)) + (math.inf,)
# The overlap slowdown cannot be seen at a probe (its all-reduce overlaps almost no compute) and is
# not fitted: it is a device measurement (calibrate/overlap.py: a layer's kernels beside the
# collectives the strategy overlaps with backward, cost/overlap.py), none for the other strategies.
OVERLAPPED_COLLECTIVES = {"ddp": ("all_reduce",), "fsdp": ("all_gather", "reduce_scatter")}


def measured_overlap_slowdown(gpu: str, strategy: str, world_size: int) -> float:
    collectives = OVERLAPPED_COLLECTIVES.get(strategy)
    if not collectives or world_size < 2:
        return 0.0
    return overlap_slowdown(gpu, collectives, world_size).slowdown


def is_probe(row) -> bool:
    return int(row.micro_batch) * int(row.seq_len) <= PROBE_TOKENS


def is_balance_probe(row) -> bool:
    return (str(row.strategy), str(row.model), int(row.micro_batch), int(row.seq_len)) in BALANCE_PROBES


def is_fit_row(row) -> bool:
    """The fit split is the probes (host and balance) and nothing else."""
    return is_probe(row) or is_balance_probe(row)


def fit_issue_exponent(balance: list, gpu: str, cm: CostModel, fitted: dict[str, FrameworkOverheads],
                       memo: dict) -> float:
    """The exponent of EXPONENT_GRID (first of the best) that puts the balance probes closest to
    their measured step times (the largest relative error), the host figures held as the host
    probes gave them; inf without balance probes."""
    if not balance:
        return ISSUE_EXPONENT

    def worst(p: float) -> float:
        return max(abs(predict_row(r, gpu, cm, replace(fitted[model_family(r.model)], issue_exponent=p),
                                   memo)["time_error"]) for r in balance)
    return min(EXPONENT_GRID, key=worst)


def model_family(name: str) -> str:
    """The catalog model a row's model is cut from ('llama-3.2-1b-4l' -> 'llama-3.2-1b'): a cut runs
    the same layers, so it shares their host time per layer."""
    m = re.fullmatch(r"(.+)-(\d+)l", str(name))
    return m.group(1) if m and m.group(1) in catalog.names("llms") else str(name)


def forward_host_share(probes: list) -> float:
    """The forward's share of the probes' host time for forward + backward, from the host phase
    columns (host_forward_s, host_backward_s) where the probes have them (the pipeline's schedule
    interleaves the phases, so its rows do not): the median over the probes, else the default."""
    shares = []
    for r in probes:
        f, b = getattr(r, "host_forward_s", None), getattr(r, "host_backward_s", None)
        if f is not None and b is not None and not (math.isnan(f) or math.isnan(b)) and f + b > 0:
            shares.append(f / (f + b))
    if not shares:
        return FrameworkOverheads().forward_host_share
    shares.sort()
    mid = len(shares) // 2
    return shares[mid] if len(shares) % 2 else 0.5 * (shares[mid - 1] + shares[mid])


def _host_from_probes(probes: list, gpu: str, cm: CostModel, reserve: float, memo: dict,
                      exponent: float = math.inf, share: float = 1.0 / 3.0) -> tuple[dict[str, float], float]:
    """({family: host_s_per_layer}, host_s_per_step) that reproduce the probe rows' step times.

    One host time per layer for each model family with a probe, one host time per step shared by
    the families (embedding, loss, optimizer dispatch: the same ops at every width). At a probe the
    step is host-bound, so its predicted time is linear in the host figures: linearise around a
    host-bound guess (finite differences), solve the least-squares system of the probes, and
    repeat from the solution (a probe that turns out partly device-bound moves the kinks). With
    probes at fewer distinct (family, depth) points than unknowns the per-step time is 0."""
    import numpy as np

    families = sorted({model_family(r.model) for r in probes})
    points = {(model_family(r.model), row_llm(r).n_layers) for r in probes}
    with_step = len(points) > len(families)

    def times(x) -> np.ndarray:
        per_layer = dict(zip(families, x))
        step_s = x[len(families)] if with_step else 0.0
        return np.array([predict_row(r, gpu, cm, FrameworkOverheads(per_layer[model_family(r.model)], reserve,
                                                                    0.0, step_s, exponent, share), memo)["predicted_time_s"]
                         for r in probes])

    measured = np.array([float(r.time_s) for r in probes])
    x = np.array([5e-3] * len(families) + ([20e-3] if with_step else []))
    for _ in range(3):
        base = times(x)
        d = 1e-3
        cols = []
        for i in range(len(x)):
            xi = x.copy()
            xi[i] += d
            cols.append((times(xi) - base) / d)
        jac = np.stack(cols, axis=1)
        # Relative errors weigh the shallow and the deep probe alike.
        w = 1.0 / measured
        step, *_ = np.linalg.lstsq(jac * w[:, None], (measured - base) * w, rcond=None)
        x = np.maximum(0.0, x + step)
    return {f: float(v) for f, v in zip(families, x)}, (float(x[len(families)]) if with_step else 0.0)


def memory_reserve_bytes(base: list[dict], steps: int = 400) -> float:
    """The non-negative reserve that minimises the largest relative peak-memory error over the rows
    predicted without one (peaks grow one for one with the reserve)."""
    meas = [b["measured_peak_memory_bytes"] for b in base]
    pred = [b["predicted_peak_memory_bytes"] for b in base]
    top = max(0.0, max(m - q for m, q in zip(meas, pred)))
    return min((top * i / steps for i in range(steps + 1)),
               key=lambda r: max(abs(q + r - m) / m for m, q in zip(meas, pred)))


def fit_strategy(rows: pd.DataFrame, gpu: str, cm: CostModel, issue_exponent: float | None = None,
                 overlap_slowdown: float | None = None) -> dict[str, FrameworkOverheads]:
    """FrameworkOverheads per model family from the host probes of one strategy at one world size
    (deterministic). Rows that are not probes are ignored: they are never fitted on.

    host_s_per_layer per family and one host_s_per_step: _host_from_probes.
    memory_reserve_bytes: memory_reserve_bytes over the probes, shared by the families (workspaces,
    caches and communicator buffers, not the model's tensors). issue_exponent: as given, else fitted
    on the balance probes among rows (fit_issue_exponent), else ISSUE_EXPONENT. overlap_slowdown: as given, else measured on the device
    (measured_overlap_slowdown for the rows' strategy and world size)."""
    given_exponent = issue_exponent
    issue_exponent = ISSUE_EXPONENT if issue_exponent is None else issue_exponent
    memo: dict = {}
    probes = [r for r in rows.itertuples() if is_probe(r)]
    balance = [r for r in rows.itertuples() if is_balance_probe(r)]
    if not probes:
        return {}
    if overlap_slowdown is None:
        overlap_slowdown = measured_overlap_slowdown(gpu, str(probes[0].strategy), int(probes[0].world_size))
    reserve = memory_reserve_bytes([predict_row(r, gpu, cm, memo=memo) for r in probes])
    share = forward_host_share(probes)
    per_layer, step = _host_from_probes(probes, gpu, cm, reserve, memo, issue_exponent, share)
    by_family = {f: forward_host_share([r for r in probes if model_family(r.model) == f]) for f in per_layer}
    fitted = {f: FrameworkOverheads(h, reserve, overlap_slowdown, step, issue_exponent, by_family[f])
              for f, h in per_layer.items()}
    balance = [r for r in balance if model_family(r.model) in fitted]
    if given_exponent is None and balance:
        p = fit_issue_exponent(balance, gpu, cm, fitted, memo)
        fitted = {f: replace(oh, issue_exponent=p) for f, oh in fitted.items()}
    return fitted


def fit_overheads(rows: pd.DataFrame, gpu: str, cm: CostModel) -> dict[tuple[str, int, str], FrameworkOverheads]:
    """FrameworkOverheads per (strategy, world size, model family) from the host probes among rows
    (fit_strategy); every other row is ignored. Use overheads_for to pick a row's."""
    out: dict[tuple[str, int, str], FrameworkOverheads] = {}
    if rows.empty:
        return out
    probes = rows[[is_fit_row(r) for r in rows.itertuples()]]
    for (strategy, ws), g in probes.groupby(["strategy", "world_size"], sort=True):
        out.update({(str(strategy), int(ws), f): oh for f, oh in fit_strategy(g, gpu, cm).items()})
    return out


def overheads_for(fits: dict[str, dict[tuple[str, int, str], FrameworkOverheads]], gpu: str,
                  row) -> tuple[FrameworkOverheads, str]:
    """The fitted overheads a row on `gpu` is predicted with (fits: fit_overheads per GPU), and where
    they come from, in this order: the probes of its own model on that GPU at its strategy and world
    size ('llama-3.2-3b probes'); else those of the probed model of the nearest width there ('nearest:
    llama-3.2-1b probes'); else, on a GPU with no probes at all (h100-sxm), the same strategy and
    world size on another GPU that has them (same framework and model, another host: 'h200-sxm
    llama-3.2-3b probes'); else none ('none': zero overheads)."""
    strategy, ws, family = str(row.strategy), int(row.world_size), model_family(row.model)
    width = load_llm(family).hidden_size if family in catalog.names("llms") else row_llm(row).hidden_size
    own = [gpu] if fits.get(gpu) else sorted(g for g in fits if fits[g])
    for g in own:
        probed = [f for s, w, f in fits[g] if (s, w) == (strategy, ws)]
        if not probed:
            continue
        near = family if family in probed else min(probed, key=lambda f: (abs(load_llm(f).hidden_size - width), f))
        label = f"{near} probes" if near == family else f"nearest: {near} probes"
        return fits[g][(strategy, ws, near)], label if g == gpu else f"{g} {label}"
    return FrameworkOverheads(), "none"
