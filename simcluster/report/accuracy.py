"""Accuracy of the calibrated cost model on measurements it was not fitted on.

Kernel families (GEMM, attention, MoE, elementwise, collectives) are fitted on the fit split of
cost/split.py and scored on the held-out shapes. Whole-model forwards (model_forward.csv) are never
fitted: they are predicted from simcluster's own operator lists (llm.ops.forward_ops) with the
model fitted on every microbenchmark row, and scored against the measured iteration times.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from simcluster.cost.attention_fit import decode_counts, predict_decode_s, predict_prefill_s, prefill_counts
from simcluster.cost.calibration import Calibration, fit_calibration
from simcluster.cost.elementwise_fit import predict_elementwise_s
from simcluster.cost.fit import ape
from simcluster.cost.host_issue import catalog_specs, forward_ops_of, host_per_kernel, is_forward_probe
from simcluster.cost.moe_fit import predict_moe_s
from simcluster.cost.streaming_fit import LOSS_BACKWARD, LOSS_FORWARD, predict_streaming_s
from simcluster.cost.split import heldout_mask
from simcluster.cost.tables import MeasuredTables
from simcluster.hardware.gpu import GpuSpec


def _held(tables: MeasuredTables, name: str) -> pd.DataFrame | None:
    frame = tables.get(name)
    if frame is None or len(frame) == 0:
        return None
    held = frame[heldout_mask(name, frame)]
    return held if len(held) else None


def kernel_predictions(cal: Calibration, tables: MeasuredTables, gpu: GpuSpec) -> pd.DataFrame:
    """One row per held-out measurement: gpu, family, shape, measured_s, predicted_s, method."""
    rows = []

    def add(family, shape, measured, predicted, covered):
        rows.append({"gpu": gpu.name, "family": family, "shape": shape, "measured_s": float(measured),
                     "predicted_s": float(predicted), "method": "measured" if covered else "fitted"})

    if (f := _held(tables, "gemm.csv")) is not None:
        for r in f.itertuples():
            fit = cal.gemm.get(r.dtype)
            if fit is not None:
                t, c = fit.predict_s(r.m, r.n, r.k, r.dtype, gpu)
                add(f"gemm_{r.dtype}", f"{r.m:g}x{r.n:g}x{r.k:g}", r.time_s, t, c)
    # Flash-pinned attention (the serving form) and the same grids through SDPA's default dispatch.
    for family, prefill, decode in (("attention", cal.prefill, cal.decode),
                                    ("attention_sdpa", cal.prefill_sdpa, cal.decode_sdpa)):
        suffix = family[len("attention"):]
        if (f := _held(tables, f"attention_prefill{suffix}.csv")) is not None and prefill is not None:
            for r in f.itertuples():
                fl, by = prefill_counts(r.batch, r.seq_len, r.n_heads, r.n_kv_heads, r.head_dim, r.causal)
                t, c = predict_prefill_s(prefill, gpu, float(fl), float(by), r.batch, r.seq_len, r.n_heads,
                                         r.n_kv_heads, r.head_dim, bool(r.causal))
                add(f"attention_prefill{suffix}",
                    f"b{r.batch:g} s{r.seq_len:g} h{r.n_heads:g}/{r.n_kv_heads:g} d{r.head_dim:g}", r.time_s, t, c)
        if (f := _held(tables, f"attention_decode{suffix}.csv")) is not None and decode is not None:
            for r in f.itertuples():
                fl, by = decode_counts(r.batch, r.context_len, r.n_heads, r.n_kv_heads, r.head_dim)
                t, c = predict_decode_s(decode, gpu, float(fl), float(by), r.batch, r.context_len, r.n_heads,
                                        r.n_kv_heads, r.head_dim)
                add(f"attention_decode{suffix}",
                    f"b{r.batch:g} c{r.context_len:g} h{r.n_heads:g}/{r.n_kv_heads:g} d{r.head_dim:g}", r.time_s, t, c)
    if (f := _held(tables, "moe.csv")) is not None and cal.moe is not None:
        impl = fit_moe_impl(tables)
        for r in f[f["impl"] == impl].itertuples() if "impl" in f.columns else f.itertuples():
            a = getattr(r, "assignments", r.tokens * r.top_k)
            t, c = predict_moe_s(cal.moe, gpu, float(a), r.n_experts, r.hidden, r.expert_ffn, r.imbalance)
            add("moe", f"t{r.tokens:g} e{r.n_experts:g} h{r.hidden:g} f{r.expert_ffn:g} imb{r.imbalance:.2f}",
                r.time_s, t, c)
    if (f := _held(tables, "elementwise.csv")) is not None:
        for r in f.itertuples():
            if r.op in cal.elementwise:
                t, c = predict_elementwise_s(cal.elementwise[r.op], gpu, r.op, r.tokens, r.hidden)
                add("elementwise", f"{r.op} t{r.tokens:g} h{r.hidden:g}", r.time_s, t, c)
    if (f := _held(tables, "collectives.csv")) is not None:
        for r in f.itertuples():
            curve = cal.collectives.get((r.op, int(r.world_size)))
            if curve is not None:
                t, c = curve.predict_s(r.bytes)
                add("collectives", f"{r.op} n{r.world_size:g} {r.bytes:g}B", r.time_s, t, c)
    if (f := _held(tables, "train_kernels.csv")) is not None:
        full = tables.get("train_kernels.csv")
        for r in f.itertuples():
            if r.op == "adamw" and f"adamw.{r.impl}" in cal.streaming:
                t, c = predict_streaming_s(cal.streaming[f"adamw.{r.impl}"], r.bytes)
            elif r.op == "cross_entropy_fwd" and LOSS_FORWARD in cal.streaming:
                t, c = predict_streaming_s(cal.streaming[LOSS_FORWARD], r.bytes)
            elif r.op == "cross_entropy_fwd_bwd" and {LOSS_FORWARD, LOSS_BACKWARD} <= set(cal.streaming):
                t = predict_streaming_s(cal.streaming[LOSS_FORWARD], r.bytes)[0] \
                    + predict_streaming_s(cal.streaming[LOSS_BACKWARD], r.bytes)[0]
                c = bool(len(full[(full["op"] == "cross_entropy_fwd") & (full["elements"] == r.elements)]))
            else:
                continue
            add("train_kernels", f"{r.op} {r.impl} {r.elements:g}", r.time_s, t, c)
    rows += unmeasured_world_predictions(tables, gpu)
    return pd.DataFrame(rows, columns=["gpu", "family", "shape", "measured_s", "predicted_s", "method"])


def unmeasured_world_predictions(tables: MeasuredTables, gpu: GpuSpec) -> list[dict]:
    """The largest measured world size predicted from the smaller ones only, through the closed
    forms on measured bus efficiencies: how far the 'fitted' path for unmeasured group sizes is
    off (family 'collectives_unmeasured_world')."""
    from simcluster.cost.collectives import LinkParams
    from simcluster.cost.collectives_fit import CalibratedCollectives, fit_collectives, link_efficiency
    from simcluster.hardware.node import default_node_for

    frame = tables.get("collectives.csv")
    if frame is None or frame["world_size"].nunique() < 2:
        return []
    top = int(frame["world_size"].max())
    curves = fit_collectives(frame[frame["world_size"] < top])
    node = default_node_for(gpu.name)
    links = LinkParams.from_node(node)
    eff = link_efficiency(curves, node.intra_node_bandwidth_bytes_per_s, node.intra_node_latency_s)
    model = CalibratedCollectives(links, node.intra_node_bandwidth_bytes_per_s, curves, eff, False)
    out = []
    for r in frame[frame["world_size"] == top].itertuples():
        if r.op in {op for op, _ in curves}:
            t, method = model.time_s(r.op, r.bytes, top)
            out.append({"gpu": gpu.name, "family": "collectives_unmeasured_world",
                        "shape": f"{r.op} n{top} {r.bytes:g}B", "measured_s": float(r.time_s),
                        "predicted_s": float(t), "method": method})
    return out


def fit_moe_impl(tables: MeasuredTables) -> str | None:
    frame = tables.get("moe.csv")
    if frame is None or "impl" not in frame.columns:
        return None
    impls = set(frame["impl"])
    return next((i for i in ("grouped_mm", "loop_mm") if i in impls), None)


def forward_predictions(cost_model, tables: MeasuredTables, gpu: GpuSpec) -> pd.DataFrame:
    """Every model_forward.csv row of a catalog LLM but the host probes, predicted from its op list
    (forward_ops_of). CUDA-graph rows are priced as a graph replay; eager rows as the framework's
    host issuing kernel by kernel, pipelined with the device (CostModel.eager_iteration), at the host
    time per kernel of their model's probe (host_per_kernel). Eager rows of a model without a probe
    are priced with the bare launch gap (launch.csv) and reported as 'forward_<phase>_unprobed'."""
    frame = tables.get("model_forward.csv")
    rows = []
    if frame is None:
        return pd.DataFrame(rows)
    specs = catalog_specs(frame["model"])
    host = host_per_kernel(frame, specs)
    for r in frame.itertuples():
        spec = specs[r.model]
        if spec is None or r.phase not in ("prefill", "decode") or is_forward_probe(r):
            continue
        ops = forward_ops_of(spec, r)
        family = f"forward_{r.phase}"
        if r.mode == "cuda_graph":
            it = cost_model.iteration(ops, True)
        elif r.model in host:
            it = cost_model.eager_iteration(ops, host[r.model])
        else:
            it, family = cost_model.iteration(ops, False), family + "_unprobed"
        rows.append({"gpu": gpu.name, "family": family, "model": r.model, "mode": r.mode,
                     "shape": f"{r.model} {r.phase} b{r.batch:g} s{r.seq_len:g} c{r.context_len:g} {r.mode}",
                     "measured_s": float(r.time_s), "predicted_s": it.time_s,
                     "method": "+".join(sorted({o.method for o in it.ops}))})
    return pd.DataFrame(rows)


def transfer_predictions(source: Calibration, tables: MeasuredTables, gpu: GpuSpec) -> pd.DataFrame:
    """Every held-out kernel row of `gpu` predicted from another GPU's calibration on this GPU's
    datasheet peaks: the accuracy of the 'transferred' path (families '<family>_transferred')."""
    cal = Calibration(source.gpu, source.gemm, source.prefill, source.decode, source.moe, source.elementwise,
                      prefill_sdpa=source.prefill_sdpa, decode_sdpa=source.decode_sdpa)
    preds = kernel_predictions(cal, tables, gpu)
    preds = preds[~preds["family"].str.startswith("collectives")].copy()
    preds["family"] = preds["family"] + "_transferred"
    preds["method"] = "transferred"
    return preds


def summarize(predictions: pd.DataFrame) -> list[dict]:
    """Per (gpu, family): n held-out points, MAPE, p90 and max absolute percentage error."""
    out = []
    if predictions is None or len(predictions) == 0:
        return out
    for (gpu, family), g in predictions.groupby(["gpu", "family"], sort=True):
        e = ape(g["predicted_s"], g["measured_s"])
        out.append({"gpu": gpu, "family": family, "n": int(len(g)), "mape_pct": float(e.mean()),
                    "p90_ape_pct": float(np.percentile(e, 90)), "max_ape_pct": float(e.max())})
    return out


def accuracy_report(tables: MeasuredTables, gpu: GpuSpec, cost_model=None) -> tuple[list[dict], pd.DataFrame]:
    """(summary rows, every prediction) for one measured GPU.

    Kernel families use a calibration fitted on the fit split only. Whole-model rows use
    `cost_model` (default: the calibrated CostModel of this GPU, fitted on all microbenchmarks),
    eager rows with the host time per kernel of their model's host probe (forward_predictions).
    """
    cal = fit_calibration(tables, gpu, "fit")
    preds = kernel_predictions(cal, tables, gpu)
    if cost_model is None and tables.has("model_forward.csv"):
        from simcluster.cost.calibrated import calibrated_cost_model
        from simcluster.cost.collectives import LinkParams
        from simcluster.hardware.node import default_node_for
        node = default_node_for(gpu.name)
        cost_model = calibrated_cost_model(gpu, node, LinkParams.from_node(node))
    if cost_model is not None:
        fwd = forward_predictions(cost_model, tables, gpu)
        if len(fwd):
            preds = pd.concat([preds, fwd[preds.columns.tolist()]], ignore_index=True)
    return summarize(preds), preds
