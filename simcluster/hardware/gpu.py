"""GpuSpec: the datasheet-level description of one accelerator, read from profiles/gpus/."""

from __future__ import annotations

from dataclasses import dataclass, field

from simcluster import catalog


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model. Rates are dense (no sparsity), per GPU; bandwidths are per direction.

    >>> load_gpu("h100-sxm").dense_flops_per_s["bf16"] > 9e14
    True
    """

    name: str
    vendor: str
    architecture: str
    memory_bytes: float
    hbm_bandwidth_bytes_per_s: float
    dense_flops_per_s: dict[str, float]          # dtype -> FLOP/s (fp32, tf32, bf16, fp16, fp8, int8, fp4)
    intra_node_link: str                          # 'nvlink4', 'nvlink5', 'infinity-fabric', 'pcie'
    intra_node_bandwidth_bytes_per_s: float       # per GPU, per direction, to its node peers
    pcie_bandwidth_bytes_per_s: float             # per direction, host link
    power_w: float
    price_usd_per_hour: float
    price_date: str
    price_source: str
    l2_bytes: float = 0.0
    sm_count: int = 0
    sources: tuple[str, ...] = field(default_factory=tuple)

    def flops_per_s(self, dtype: str) -> float:
        """Dense FLOP/s in `dtype`; falls back to bf16 for a format the chip lacks (e.g. fp8 on A100)."""
        if dtype in self.dense_flops_per_s:
            return self.dense_flops_per_s[dtype]
        if dtype == "fp16" and "bf16" in self.dense_flops_per_s:
            return self.dense_flops_per_s["bf16"]
        return self.dense_flops_per_s["bf16"]

    def supports(self, dtype: str) -> bool:
        return dtype in self.dense_flops_per_s


def gpu_names() -> list[str]:
    return catalog.names("gpus")


def load_gpu(name: str) -> GpuSpec:
    """Read profiles/gpus/<name>.yaml into a GpuSpec."""
    d = catalog.read_entry("gpus", name)
    price = d.get("price", {})
    return GpuSpec(
        name=d["name"],
        vendor=d["vendor"],
        architecture=d["architecture"],
        memory_bytes=float(d["memory_bytes"]),
        hbm_bandwidth_bytes_per_s=float(d["hbm_bandwidth_bytes_per_s"]),
        dense_flops_per_s={k: float(v) for k, v in d["dense_flops_per_s"].items()},
        intra_node_link=d["intra_node_link"],
        intra_node_bandwidth_bytes_per_s=float(d["intra_node_bandwidth_bytes_per_s"]),
        pcie_bandwidth_bytes_per_s=float(d["pcie_bandwidth_bytes_per_s"]),
        power_w=float(d["power_w"]),
        price_usd_per_hour=float(price["usd_per_hour"]),
        price_date=str(price["date"]),
        price_source=str(price["source"]),
        l2_bytes=float(d.get("l2_bytes", 0.0)),
        sm_count=int(d.get("sm_count", 0)),
        sources=tuple(d.get("sources", ())),
    )
