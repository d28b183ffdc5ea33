import pytest

from simcluster.cost import CostModel, LaunchOverhead
from simcluster.cost.roofline import DEFAULT_EFFICIENCY
from simcluster.hardware import load_gpu
from simcluster.llm.ops import Op, gemm


def test_big_gemm_compute_bound_at_efficiency():
    gpu = load_gpu("h100-sxm")
    cm = CostModel(gpu)
    e = cm.op(gemm("g", 8192, 8192, 8192, "bf16"))
    assert e.bound == "compute" and e.method == "roofline"
    assert e.time_s == pytest.approx(2 * 8192**3 / (gpu.flops_per_s("bf16") * DEFAULT_EFFICIENCY["gemm"][0]))


def test_skinny_gemm_memory_bound_and_fp8_faster_when_compute_bound():
    gpu = load_gpu("h100-sxm")
    cm = CostModel(gpu)
    skinny = cm.op(gemm("g", 1, 4096, 4096, "bf16"))
    assert skinny.bound == "memory"
    assert cm.op(gemm("g", 8192, 8192, 8192, "fp8")).time_s < cm.op(gemm("g", 8192, 8192, 8192, "bf16")).time_s / 1.5


def test_launch_gap_floors_tiny_kernels():
    cm = CostModel(load_gpu("h100-sxm"), launch=LaunchOverhead(eager_s=10e-6, cuda_graph_s=2e-6))
    tiny = Op("t", "elementwise", flops=1, bytes=64, repeat=100)
    assert cm.op(tiny, cuda_graphs=False).time_s == pytest.approx(100 * 10e-6)
    assert cm.op(tiny, cuda_graphs=True).time_s == pytest.approx(100 * 2e-6)


def test_a100_has_no_fp8_and_falls_back_to_bf16_rate():
    a100 = load_gpu("a100-sxm-80gb")
    assert not a100.supports("fp8")
    assert a100.flops_per_s("fp8") == a100.flops_per_s("bf16")
