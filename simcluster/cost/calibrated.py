"""The calibrated cost model: measured tables first, fitted curves outside them, another GPU's
curves for a GPU never measured — and every prediction says which.

Methods a prediction reports:
- 'measured'    the query lies inside a measured family (same GEMM (n, k) and dtype within the
                measured m range; same attention head layout within the measured (batch, length)
                box; same elementwise op and width; same MoE expert shape; same collective and
                world size within the measured sizes): the fitted curve × the interpolated
                residual of the measurements around it;
- 'fitted'      this GPU's fitted curve (roofline × efficiencies fitted from its measurements)
                with a residual smoothed over neighbouring families;
- 'transferred' the GPU has no measurements: the fitted efficiencies and residuals of the
                nearest measured GPU, applied to this GPU's datasheet peaks. Nearest means the
                same architecture first (e.g. H100 PCIe takes H100 SXM), then the smallest
                |log peak-bf16 ratio| + |log HBM-bandwidth ratio|;
- 'roofline'    no family fits the op: an op kind never measured, or an attention layout far
                from every measured one (more than 2x outside the measured heads / kv heads /
                head dims, e.g. DeepSeek's 576-wide MLA latent): datasheet × defaults.

An attention op marked shape['dispatch'] == 'sdpa' (llm.ops.Implementation.attention: torch's
default SDPA backend choice, as the plain-torch benchmark runs it) is priced from the
attention_*_sdpa tables; a GPU without them prices it from the flash tables and its method says
so, e.g. 'measured (flash table for sdpa)'.
"""

from __future__ import annotations

import math

from simcluster.cost.attention_fit import predict_decode_s, predict_prefill_s
from simcluster.cost.calibration import Calibration, load_calibration
from simcluster.cost.collectives import LinkParams
from simcluster.cost.collectives_fit import CalibratedCollectives, link_efficiency
from simcluster.cost.elementwise_fit import predict_elementwise_s, table_op
from simcluster.cost.model import CostModel, LaunchOverhead
from simcluster.cost.moe_fit import MATRICES, predict_moe_s
from simcluster.cost.streaming_fit import predict_streaming_s
from simcluster.cost.roofline import RooflineKernels
from simcluster.cost.tables import measured_gpus
from simcluster.hardware.gpu import GpuSpec, load_gpu
from simcluster.llm.ops import Op

MEMO_LIMIT = 200_000       # distinct ops remembered per model before the memo starts afresh


class CalibratedKernels:
    """`time_s(op) -> (seconds, method)` from a Calibration, for CostModel(kernels=...).

    gpu: the GPU being timed; calibration: its own (transferred=False) or the nearest measured
    GPU's (transferred=True).

    >>> from simcluster.llm.ops import gemm
    >>> k = CalibratedKernels(load_gpu("h100-sxm"), load_calibration(load_gpu("h100-sxm")))
    >>> t, method = k.time_s(gemm("x", 1024, 4096, 4096, "bf16"))
    >>> method, 5e-6 < t < 1e-3
    ('measured', True)
    """

    def __init__(self, gpu: GpuSpec, calibration: Calibration, transferred: bool = False):
        self.gpu = gpu
        self.calibration = calibration
        self.transferred = transferred
        self.fallback = RooflineKernels(gpu)
        self._memo: dict = {}

    def time_s(self, op: Op) -> tuple[float, str]:
        key = (op.kind, op.dtype, op.flops, op.bytes, tuple(sorted(op.shape.items())))
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            hit = self._memo[key] = self._time_s(op)
        return hit

    def _attention_fit(self, op: Op):
        """(fitted curve, method suffix) of an attention op: its dispatch's table, else flash's."""
        cal = self.calibration
        flash = cal.prefill if op.kind == "attention_prefill" else cal.decode
        if op.shape.get("dispatch") != "sdpa":
            return flash, ""
        sdpa = cal.prefill_sdpa if op.kind == "attention_prefill" else cal.decode_sdpa
        return (sdpa, "") if sdpa is not None else (flash, " (flash table for sdpa)")

    def _attention_layout_known(self, fit, op: Op) -> bool:
        s = op.shape
        return fit is not None and fit.covers_layout(
            [math.log2(max(s[k], 1)) for k in ("n_heads", "n_kv_heads", "head_dim")])

    def _method(self, covered: bool) -> str:
        if self.transferred:
            return "transferred"
        return "measured" if covered else "fitted"

    def has_streaming(self, kernel: str) -> bool:
        return kernel in self.calibration.streaming

    def _time_s(self, op: Op) -> tuple[float, str]:
        cal, s = self.calibration, op.shape
        if s.get("kernel") in cal.streaming:
            t, covered = predict_streaming_s(cal.streaming[s["kernel"]], op.bytes)
            if self.transferred:
                # The measured GPU's share of its HBM peak, at this GPU's peak.
                t *= load_gpu(cal.gpu).hbm_bandwidth_bytes_per_s / self.gpu.hbm_bandwidth_bytes_per_s
            return t, self._method(covered)
        if op.kind == "gemm" and cal.gemm:
            dtype = op.dtype if op.dtype in cal.gemm else ("bf16" if op.dtype == "fp16" else op.dtype)
            fit = cal.gemm.get(dtype) or cal.gemm.get("bf16")
            t, covered = fit.predict_s(s["m"], s["n"], s["k"], op.dtype, self.gpu)
            return t, self._method(covered and dtype in cal.gemm)
        if op.kind in ("attention_prefill", "attention_decode"):
            fit, note = self._attention_fit(op)
            if not self._attention_layout_known(fit, op):
                return self.fallback.time_s(op)
            if op.kind == "attention_prefill":
                t, covered = predict_prefill_s(fit, self.gpu, op.flops, op.bytes, s["batch"], s["seq_len"],
                                               s["n_heads"], s["n_kv_heads"], s["head_dim"])
                # Only a prefill without cached prefix is the shape the table measured.
                covered = covered and abs(s.get("context_len", s["seq_len"]) - s["seq_len"]) < 1.0
            else:
                t, covered = predict_decode_s(fit, self.gpu, op.flops, op.bytes, s["batch"], s["context_len"],
                                              s["n_heads"], s["n_kv_heads"], s["head_dim"])
            return t, self._method(covered) + note
        if op.kind == "moe" and cal.moe is not None:
            pairs = op.flops / (2.0 * MATRICES * s["hidden"] * s["expert_ffn"])
            t, covered = predict_moe_s(cal.moe, self.gpu, pairs, s.get("local_experts", s["n_experts"]),
                                       s["hidden"], s["expert_ffn"], s.get("imbalance", 1.0), op.dtype)
            return t, self._method(covered)
        name = table_op(op)
        if name is not None and name in cal.elementwise and "tokens" in s and "hidden" in s:
            t, covered = predict_elementwise_s(cal.elementwise[name], self.gpu, name, s["tokens"], s["hidden"])
            return t, self._method(covered)
        return self.fallback.time_s(op)


def nearest_measured_gpu(gpu: GpuSpec, measured: list[GpuSpec]) -> GpuSpec | None:
    """The measured GPU whose curves `gpu` borrows: same architecture first, then the least
    |log bf16-peak ratio| + |log HBM-bandwidth ratio| (ties: name order)."""
    if not measured:
        return None
    same = [g for g in measured if g.architecture == gpu.architecture]
    pool = same or measured

    def distance(g: GpuSpec) -> tuple[float, str]:
        return (abs(math.log(gpu.flops_per_s("bf16") / g.flops_per_s("bf16")))
                + abs(math.log(gpu.hbm_bandwidth_bytes_per_s / g.hbm_bandwidth_bytes_per_s)), g.name)
    return min(pool, key=distance)


def _default_node(gpu: GpuSpec):
    from simcluster.hardware.node import default_node_for
    return default_node_for(gpu.name)


def calibrated_collectives(gpu: GpuSpec, node, links: LinkParams, calibrations: dict[str, Calibration]) -> CalibratedCollectives:
    """Collectives on this GPU's node: its own measured curves, else the nearest measured GPU's
    bus efficiencies ('transferred'), else the plain closed forms ('alpha-beta')."""
    intra = node.intra_node_bandwidth_bytes_per_s if node is not None else gpu.intra_node_bandwidth_bytes_per_s
    own = calibrations.get(gpu.name)
    if own is not None and own.collectives:
        eff = link_efficiency(own.collectives, intra, links.intra_latency_s)
        return CalibratedCollectives(links, intra, own.collectives, eff, False)
    with_curves = [load_gpu(name) for name, c in calibrations.items() if c.collectives]
    source = nearest_measured_gpu(gpu, with_curves)
    if source is None:
        return CalibratedCollectives(links, intra, {}, {}, False)
    source_node = _default_node(source)
    eff = link_efficiency(calibrations[source.name].collectives, source_node.intra_node_bandwidth_bytes_per_s,
                          source_node.intra_node_latency_s)
    return CalibratedCollectives(links, intra, {}, eff, True)


def calibrated_cost_model(gpu: GpuSpec, node=None, links: LinkParams | None = None) -> CostModel:
    """CostModel on measured tables (profiles/measured/<gpu>/), the nearest measured GPU's curves
    when this GPU has none, or plain roofline when nothing is measured at all."""
    links = links or (LinkParams.from_node(node) if node is not None else None)
    names = measured_gpus()
    calibrations: dict[str, Calibration] = {}
    if gpu.name in names:
        calibrations[gpu.name] = load_calibration(gpu)
        source, transferred = gpu.name, False
    else:
        near = nearest_measured_gpu(gpu, [load_gpu(n) for n in names])
        if near is None:
            return CostModel(gpu, links)
        calibrations[near.name] = load_calibration(near)
        source, transferred = near.name, True
    cal = calibrations[source]
    if not cal.collectives:
        for name in names:       # collectives may have been measured on another GPU type only
            if name not in calibrations:
                calibrations[name] = load_calibration(load_gpu(name))
    launch = LaunchOverhead(**{f"{m}_s": v for m, v in cal.launch_s.items()
                               if m in ("eager", "cuda_graph", "switch", "graph_gap", "graph_gap_large")})
    cm = CostModel(gpu, links, kernels=CalibratedKernels(gpu, cal, transferred), launch=launch)
    cm.collectives = calibrated_collectives(gpu, node, cm.links, calibrations)
    return cm
