"""CostModel: the one interface the simulators use to time operators, collectives and iterations."""

from __future__ import annotations

from dataclasses import dataclass

from simcluster.cost.collectives import LinkParams, collective_time_s
from simcluster.cost.roofline import RooflineKernels, bound
from simcluster.hardware.gpu import GpuSpec
from simcluster.llm.ops import Op


LARGE_KERNEL_KINDS = ("gemm", "moe", "attention_prefill", "attention_decode")


@dataclass(frozen=True)
class LaunchOverhead:
    """Host-side gap per kernel launch. Eager PyTorch pays Python + dispatcher + launch per kernel;
    a CUDA-graph replay pays only the graph's inter-node gap. Measured figures replace these.

    switch_s: device time an op adds when it follows a different kernel, beyond its table time:
    the kernel tables time each op back to back with itself (calibrate/kernel_switch.py measures
    the difference; 0 where it was not measured)."""

    eager_s: float = 12e-6
    cuda_graph_s: float = 2.5e-6
    switch_s: float = 0.0
    # Device idle between consecutive kernels of a CUDA-graph replay (calibrate/graph_gap.py), beyond
    # each kernel's table time: graph_gap_s after a small (elementwise, norm) kernel, graph_gap_large_s
    # after a GEMM / attention / MoE kernel. 0 where not measured.
    graph_gap_s: float = 0.0
    graph_gap_large_s: float = 0.0

    def per_kernel_s(self, cuda_graphs: bool) -> float:
        return self.cuda_graph_s if cuda_graphs else self.eager_s

    def gap_s(self, kind: str) -> float:
        """Idle device time after one kernel of `kind` between stream-ordered kernels: measured in a
        graph replay, a lower bound for eager launches too (which add the host's gaps, per_kernel_s,
        where the host is the slower side)."""
        return self.graph_gap_large_s if kind in LARGE_KERNEL_KINDS else self.graph_gap_s


@dataclass(frozen=True)
class OpEstimate:
    """Timing of one op over its `repeat` occurrences; `method` says where the number came from:
    'measured' (interpolated table), 'fitted' (roofline × fitted efficiency curve), 'transferred'
    (curve of another GPU), 'roofline' (datasheet × default efficiency), 'alpha-beta' (links)."""

    name: str
    kind: str
    repeat: int
    time_s: float           # all occurrences, launch gaps included
    kernel_s: float         # one occurrence on the device
    method: str
    bound: str
    flops: float
    bytes: float

    def as_record(self) -> dict:
        return {"op": self.name, "kind": self.kind, "repeat": self.repeat, "time_s": self.time_s,
                "kernel_s": self.kernel_s, "method": self.method, "bound": self.bound,
                "flops": self.flops * self.repeat, "bytes": self.bytes * self.repeat}


@dataclass(frozen=True)
class IterationEstimate:
    time_s: float
    ops: tuple[OpEstimate, ...]

    def breakdown(self) -> list[dict]:
        return [o.as_record() for o in self.ops]

    def by_kind(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for o in self.ops:
            out[o.kind] = out.get(o.kind, 0.0) + o.time_s
        return out


class CostModel:
    """Times ops on one GPU type within one node type.

    kernels: any object with `time_s(op) -> (seconds, method)` (RooflineKernels, CalibratedKernels);
    links: LinkParams for collectives; launch: per-kernel host gaps.

    >>> from simcluster.hardware.gpu import load_gpu
    >>> from simcluster.llm.ops import gemm
    >>> cm = CostModel(load_gpu("h100-sxm"))
    >>> cm.op(gemm("x", 4096, 4096, 4096, "bf16")).time_s < 1e-3
    True
    """

    def __init__(self, gpu: GpuSpec, links: LinkParams | None = None, kernels=None,
                 launch: LaunchOverhead | None = None, collectives=None):
        self.gpu = gpu
        self.links = links or LinkParams(8, gpu.intra_node_bandwidth_bytes_per_s * 0.8, 3e-6,
                                         50e9 * 0.8, 8e-6)
        self.kernels = kernels or RooflineKernels(gpu)
        self.launch = launch or LaunchOverhead()
        self.collectives = collectives
        self._cache: dict = {}

    def measures(self, kernel: str) -> bool:
        """Whether a streaming kernel (Op.shape['kernel']: 'adamw.fused', ...) has measured rates."""
        return bool(getattr(self.kernels, "has_streaming", lambda _: False)(kernel))

    def collective_s(self, op: Op) -> tuple[float, str]:
        if self.collectives is not None:
            return self.collectives.time_s(op.collective, op.message_bytes, op.group_size, op.scope)
        return collective_time_s(op.collective, op.message_bytes, op.group_size, self.links, op.scope), "alpha-beta"

    def op(self, op: Op, cuda_graphs: bool = True) -> OpEstimate:
        """Time of `op` × its repeat count. One occurrence takes the longer of its device time and
        the host's launch gaps of its `op.kernels` kernels: a host that launches slower than the
        device runs leaves the device idle between kernels."""
        if op.kind == "collective":
            t, method = self.collective_s(op)
            return OpEstimate(op.name, op.kind, op.repeat, t * op.repeat, t, method, "network", op.flops, op.bytes)
        t, method = self.kernels.time_s(op)
        t += self.launch.switch_s
        gap = self.launch.per_kernel_s(cuda_graphs)
        busy = t + op.kernels * self.launch.gap_s(op.kind)
        return OpEstimate(op.name, op.kind, op.repeat, max(busy, op.kernels * gap) * op.repeat, t, method,
                          bound(op, self.gpu), op.flops, op.bytes)

    def iteration(self, ops: list[Op], cuda_graphs: bool = True) -> IterationEstimate:
        """Time of one iteration: ops run back to back on one stream (TP collectives are not overlapped)."""
        estimates = tuple(self.op(o, cuda_graphs) for o in ops)
        return IterationEstimate(sum(e.time_s for e in estimates), estimates)

    def eager_iteration(self, ops: list[Op], host_per_kernel_s: float) -> IterationEstimate:
        """One iteration issued kernel by kernel by a framework whose host spends
        `host_per_kernel_s` per listed kernel (cost/host_issue.py): host issue and device run
        pipelined. The op estimates are the device side (as in a graph replay)."""
        from simcluster.cost.host_issue import eager_iteration_s
        estimates = tuple(self.op(o, True) for o in ops)
        time_s = eager_iteration_s(ops, [e.time_s / max(e.repeat, 1) for e in estimates], host_per_kernel_s)
        return IterationEstimate(time_s, estimates)
