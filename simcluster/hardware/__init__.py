"""Hardware: GPUs and nodes from the catalog, and the cluster topology graph built from them."""

from simcluster.hardware.gpu import GpuSpec, gpu_names, load_gpu
from simcluster.hardware.node import (
    INTER_NODE_KINDS,
    INTRA_NODE_KINDS,
    NodeSpec,
    default_node_for,
    load_node,
    node_names,
)
from simcluster.hardware.topology import (
    TopologyError,
    build_cluster,
    gpu_vertex,
    gpus,
    path_bandwidth_bytes_per_s,
    path_latency_s,
    route,
    set_link_bandwidth,
)

__all__ = [
    "GpuSpec", "gpu_names", "load_gpu",
    "INTER_NODE_KINDS", "INTRA_NODE_KINDS", "NodeSpec", "default_node_for", "load_node", "node_names",
    "TopologyError", "build_cluster", "gpu_vertex", "gpus", "path_bandwidth_bytes_per_s", "path_latency_s",
    "route", "set_link_bandwidth",
]
