"""The GPU catalog: every entry loads, and its figures agree with the datasheets it cites."""

import pytest

from simcluster.catalog import CatalogError
from simcluster.hardware import gpu_names, load_gpu

EXPECTED = {"h100-sxm", "h100-pcie", "h200-sxm", "a100-sxm-80gb", "a100-sxm-40gb", "l40s", "l4", "a10g",
            "b200", "mi300x"}

# Datasheet figures as printed (TFLOPS, *with* 2:4 sparsity where the vendor prints it so):
# the catalog must hold half of them. (gpu, dtype, printed sparse TFLOPS)
SPARSE_DATASHEET_TFLOPS = [
    ("h100-sxm", "bf16", 1979), ("h100-sxm", "fp8", 3958),
    ("h100-pcie", "bf16", 1513), ("h100-pcie", "fp8", 3026), ("h100-pcie", "tf32", 756),
    ("h200-sxm", "bf16", 1979), ("h200-sxm", "fp8", 3958),
    ("a100-sxm-80gb", "bf16", 624), ("a100-sxm-80gb", "int8", 1248), ("a100-sxm-40gb", "tf32", 312),
    ("l40s", "fp8", 1466), ("l40s", "tf32", 366),
    ("l4", "bf16", 242), ("l4", "fp8", 485), ("l4", "tf32", 120),
    ("b200", "bf16", 4500), ("b200", "fp8", 9000), ("b200", "fp4", 18000),
    ("mi300x", "bf16", 2614.9), ("mi300x", "fp8", 5229.8),
]

# (gpu, memory GiB, bandwidth TB/s, TDP W)
MEMORY_AND_POWER = [
    ("h100-sxm", 80, 3.35, 700), ("h100-pcie", 80, 2.0, 350), ("h200-sxm", 141, 4.8, 700),
    ("a100-sxm-80gb", 80, 2.039, 400), ("a100-sxm-40gb", 40, 1.555, 400), ("l40s", 48, 0.864, 350),
    ("l4", 24, 0.300, 72), ("a10g", 24, 0.600, 300), ("b200", 180, 8.0, 1000), ("mi300x", 192, 5.3, 750),
]


def test_catalog_holds_the_expected_gpus():
    assert EXPECTED <= set(gpu_names())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_gpu_is_complete_and_plausible(name):
    gpu = load_gpu(name)
    assert gpu.name == name
    assert gpu.sources, "every entry cites its datasheets"
    assert gpu.price_usd_per_hour > 0 and gpu.price_date and gpu.price_source
    for dtype in ("fp32", "bf16", "fp16"):
        assert gpu.supports(dtype)
    # Tensor-core formats are faster than plain fp32, and halving the width never slows the chip down.
    assert gpu.flops_per_s("bf16") > gpu.flops_per_s("fp32")
    if gpu.supports("fp8"):
        # 2% slack: the L40S datasheet prints bf16 (362) and fp8 (733) at slightly different clocks.
        assert gpu.flops_per_s("fp8") == pytest.approx(2 * gpu.flops_per_s("bf16"), rel=0.02)
    # Roofline ridge point (bf16 FLOP per HBM byte): every current accelerator sits between 100 and 700.
    ridge = gpu.flops_per_s("bf16") / gpu.hbm_bandwidth_bytes_per_s
    assert 100 < ridge < 700, ridge
    assert gpu.intra_node_bandwidth_bytes_per_s >= gpu.pcie_bandwidth_bytes_per_s
    assert gpu.l2_bytes > 0 and gpu.sm_count > 0 and gpu.power_w > 0


@pytest.mark.parametrize("name,dtype,sparse_tflops", SPARSE_DATASHEET_TFLOPS)
def test_catalog_rates_are_dense_halves_of_sparse_datasheet_figures(name, dtype, sparse_tflops):
    assert load_gpu(name).dense_flops_per_s[dtype] == pytest.approx(sparse_tflops * 1e12 / 2, rel=0.005)


@pytest.mark.parametrize("name,gib,tb_per_s,watts", MEMORY_AND_POWER)
def test_memory_bandwidth_and_power_match_datasheets(name, gib, tb_per_s, watts):
    gpu = load_gpu(name)
    assert gpu.memory_bytes == pytest.approx(gib * 2**30, rel=1e-9)
    assert gpu.hbm_bandwidth_bytes_per_s == pytest.approx(tb_per_s * 1e12, rel=1e-3)
    assert gpu.power_w == watts


def test_formats_a_chip_lacks_are_absent():
    assert not load_gpu("a100-sxm-80gb").supports("fp8")
    assert not load_gpu("a10g").supports("fp8")
    assert not load_gpu("h100-sxm").supports("fp4")
    assert load_gpu("b200").supports("fp4")


def test_interconnect_figures_are_per_direction():
    # NVLink 4 / 5 and Infinity Fabric are quoted bidirectional (900 GB/s, 1.8 TB/s, 896 GB/s).
    assert load_gpu("h100-sxm").intra_node_bandwidth_bytes_per_s == 450e9
    assert load_gpu("b200").intra_node_bandwidth_bytes_per_s == 900e9
    assert load_gpu("mi300x").intra_node_bandwidth_bytes_per_s == 448e9
    for name in ("l40s", "l4", "a10g"):
        gpu = load_gpu(name)
        assert gpu.intra_node_link == "pcie" and gpu.intra_node_bandwidth_bytes_per_s == 32e9


def test_unknown_gpu_lists_the_known_ones():
    with pytest.raises(CatalogError) as err:
        load_gpu("h900")
    assert "h900" in str(err.value) and "h100-sxm" in str(err.value) and "\n" not in str(err.value)
