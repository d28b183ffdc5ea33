"""Roofline kernel timing: max(FLOPs / achievable FLOP/s, bytes / achievable bytes/s).

'Achievable' is the datasheet peak times a per-kind efficiency. These defaults are the fallback
when no measurement covers an op; the calibrated model fits its own curves over them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simcluster.hardware.gpu import GpuSpec
from simcluster.llm.ops import Op

# (compute efficiency, memory-bandwidth efficiency) per op kind. Typical fractions of peak that
# cuBLAS / FlashAttention / fused elementwise kernels reach on large shapes on Hopper/Ampere.
DEFAULT_EFFICIENCY: dict[str, tuple[float, float]] = {
    "gemm": (0.75, 0.85),
    "attention_prefill": (0.55, 0.80),
    "attention_decode": (0.50, 0.70),
    "moe": (0.60, 0.75),
    "norm": (0.50, 0.70),
    "activation": (0.50, 0.75),
    "rope": (0.50, 0.60),
    "embedding": (0.50, 0.60),
    "sampling": (0.50, 0.50),
    "elementwise": (0.50, 0.75),
}


@dataclass(frozen=True)
class RooflineKernels:
    """Kernel time from the GPU's datasheet peaks and per-kind efficiencies."""

    gpu: GpuSpec
    efficiency: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_EFFICIENCY))
    min_kernel_s: float = 2.0e-6   # even an empty kernel occupies the GPU a couple of microseconds

    def time_s(self, op: Op) -> tuple[float, str]:
        """(seconds for one occurrence, method 'roofline')."""
        return roofline_time_s(op, self.gpu, self.efficiency.get(op.kind, (0.5, 0.7)), self.min_kernel_s), "roofline"


def roofline_time_s(op: Op, gpu: GpuSpec, efficiency: tuple[float, float], min_kernel_s: float = 0.0) -> float:
    """max(compute time, memory time) at the given (compute, memory) efficiencies."""
    compute_eff, memory_eff = efficiency
    t_compute = op.flops / (gpu.flops_per_s(op.dtype if op.kind in ("gemm", "moe") else "bf16") * compute_eff)
    t_memory = op.bytes / (gpu.hbm_bandwidth_bytes_per_s * memory_eff)
    return max(t_compute, t_memory, min_kernel_s)


def bound(op: Op, gpu: GpuSpec) -> str:
    """Which roof limits the op at peak rates: 'compute' or 'memory'."""
    t_compute = op.flops / gpu.flops_per_s("bf16")
    t_memory = op.bytes / gpu.hbm_bandwidth_bytes_per_s
    return "compute" if t_compute >= t_memory else "memory"
