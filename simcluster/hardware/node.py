"""NodeSpec: one server (GPUs, their intra-node fabric, NICs, host), read from profiles/nodes/."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simcluster import catalog
from simcluster.catalog import CatalogError
from simcluster.hardware.gpu import GpuSpec, gpu_names, load_gpu

INTRA_NODE_KINDS = ("nvswitch", "nvlink-bridge", "pcie", "infinity-fabric")
INTER_NODE_KINDS = ("infiniband", "roce", "ethernet")


@dataclass(frozen=True)
class NodeSpec:
    """One server. Bandwidths are per direction; intra-node is per GPU, inter-node per NIC.

    >>> node = load_node("dgx-h100")
    >>> node.gpus_per_node, node.nics_per_node
    (8, 8)
    """

    name: str
    gpu: str                                      # GpuSpec name, e.g. 'h100-sxm'
    gpus_per_node: int
    intra_node_kind: str                          # one of INTRA_NODE_KINDS
    intra_node_bandwidth_bytes_per_s: float       # per GPU, per direction (all links of the GPU together)
    intra_node_latency_s: float                   # GPU-to-GPU small-message latency inside the node
    inter_node_kind: str                          # one of INTER_NODE_KINDS
    nics_per_node: int
    nic_bandwidth_bytes_per_s: float              # per NIC, per direction
    inter_node_latency_s: float                   # GPU-to-GPU small-message latency between nodes
    host_memory_bytes: float
    host_to_device_bandwidth_bytes_per_s: float   # per GPU, per direction (its PCIe link)
    default_for_gpu: bool = False                 # the node default_node_for(gpu) returns
    sources: tuple[str, ...] = field(default_factory=tuple)

    def gpu_spec(self) -> GpuSpec:
        """The GpuSpec of this node's GPUs, read from profiles/gpus/."""
        return load_gpu(self.gpu)

    @property
    def nic_bandwidth_per_node_bytes_per_s(self) -> float:
        return self.nics_per_node * self.nic_bandwidth_bytes_per_s


def node_names() -> list[str]:
    return catalog.names("nodes")


def _path(name: str) -> Path:
    return catalog.profiles_dir() / "nodes" / f"{name}.yaml"


def _get(d: dict[str, Any], key: str, path: Path, kind: type) -> Any:
    """d[key] converted to `kind`; CatalogError naming the file and key when missing or unreadable."""
    if key not in d:
        raise CatalogError(f"{path}: missing key {key!r}")
    try:
        return kind(d[key])
    except (TypeError, ValueError):
        raise CatalogError(f"{path}: key {key!r} must be {kind.__name__}, got {d[key]!r}") from None


def _positive(value: float, key: str, path: Path) -> float:
    if value <= 0:
        raise CatalogError(f"{path}: key {key!r} must be > 0, got {value!r}")
    return value


def load_node(name: str) -> NodeSpec:
    """Read profiles/nodes/<name>.yaml into a NodeSpec; CatalogError names the file and the bad key."""
    d = catalog.read_entry("nodes", name)
    path = _path(name)
    spec = NodeSpec(
        name=_get(d, "name", path, str),
        gpu=_get(d, "gpu", path, str),
        gpus_per_node=_get(d, "gpus_per_node", path, int),
        intra_node_kind=_get(d, "intra_node_kind", path, str),
        intra_node_bandwidth_bytes_per_s=_get(d, "intra_node_bandwidth_bytes_per_s", path, float),
        intra_node_latency_s=_get(d, "intra_node_latency_s", path, float),
        inter_node_kind=_get(d, "inter_node_kind", path, str),
        nics_per_node=_get(d, "nics_per_node", path, int),
        nic_bandwidth_bytes_per_s=_get(d, "nic_bandwidth_bytes_per_s", path, float),
        inter_node_latency_s=_get(d, "inter_node_latency_s", path, float),
        host_memory_bytes=_get(d, "host_memory_bytes", path, float),
        host_to_device_bandwidth_bytes_per_s=_get(d, "host_to_device_bandwidth_bytes_per_s", path, float),
        default_for_gpu=bool(d.get("default_for_gpu", False)),
        sources=tuple(d.get("sources", ())),
    )
    if spec.intra_node_kind not in INTRA_NODE_KINDS:
        raise CatalogError(f"{path}: key 'intra_node_kind' must be one of {list(INTRA_NODE_KINDS)}, "
                           f"got {spec.intra_node_kind!r}")
    if spec.inter_node_kind not in INTER_NODE_KINDS:
        raise CatalogError(f"{path}: key 'inter_node_kind' must be one of {list(INTER_NODE_KINDS)}, "
                           f"got {spec.inter_node_kind!r}")
    if spec.gpu not in gpu_names():
        raise CatalogError(f"{path}: key 'gpu' names unknown GPU {spec.gpu!r}; expected one of: "
                           f"{', '.join(gpu_names())}")
    for key in ("gpus_per_node", "nics_per_node", "intra_node_bandwidth_bytes_per_s",
                "nic_bandwidth_bytes_per_s", "host_to_device_bandwidth_bytes_per_s", "host_memory_bytes"):
        _positive(getattr(spec, key), key, path)
    for key in ("intra_node_latency_s", "inter_node_latency_s"):
        if getattr(spec, key) < 0:
            raise CatalogError(f"{path}: key {key!r} must be >= 0, got {getattr(spec, key)!r}")
    if spec.intra_node_kind == "nvlink-bridge" and spec.gpus_per_node % 2:
        raise CatalogError(f"{path}: key 'gpus_per_node' must be even for nvlink-bridge pairs, "
                           f"got {spec.gpus_per_node}")
    return spec


def default_node_for(gpu_name: str) -> NodeSpec:
    """The catalog node marked `default_for_gpu` among those holding `gpu_name` (else the first such).

    >>> default_node_for("h100-sxm").name
    'dgx-h100'
    """
    candidates = [load_node(n) for n in node_names()]
    holding = [n for n in candidates if n.gpu == gpu_name]
    if not holding:
        known = sorted({n.gpu for n in candidates})
        raise CatalogError(f"no node in the catalog holds GPU {gpu_name!r}; GPUs with nodes: {', '.join(known)}")
    defaults = [n for n in holding if n.default_for_gpu]
    return (defaults or holding)[0]
