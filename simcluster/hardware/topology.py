"""Cluster topology: a networkx graph of GPUs, intra-node fabric, NICs and a rail-optimised leaf/spine network.

Vertices (attribute `kind`):
  "n{i}.g{j}"      gpu            GPU j of node i (also `node_index`, `local_index`)
  "n{i}.nvswitch"  nvswitch       the NVSwitch fabric of an NVSwitch node
  "n{i}.pcie"      pcie-switch    the PCIe fabric of a PCIe or NVLink-bridge node
  "n{i}.nic{k}"    nic            NIC k of node i, on rail k
  "leaf{k}"        leaf           the network switch of rail k (NIC k of every node)
  "spine"          spine          joins the leaves

Edges carry `bandwidth_bytes_per_s` (per direction), `latency_s` and `kind`. Latencies are split so that
a GPU-to-GPU route adds up to the node's `intra_node_latency_s` inside a node and `inter_node_latency_s`
between nodes. Graphs are treated as immutable: build_cluster returns a frozen graph and
set_link_bandwidth returns a new one.

>>> from simcluster.hardware.node import load_node
>>> g = build_cluster(load_node("dgx-h100"), 2)
>>> path_bandwidth_bytes_per_s(g, "n0.g0", "n0.g1") / 1e9, path_bandwidth_bytes_per_s(g, "n0.g0", "n1.g0") / 1e9
(450.0, 50.0)
"""

from __future__ import annotations

import math

import networkx as nx

from simcluster.hardware.node import NodeSpec

# Added to every hop's latency when routing so that, of equally fast routes, the one with fewer hops wins
# (an NVLink bridge beats the PCIe detour of the same latency); far below any real latency.
_HOP_TIE_BREAK_S = 1e-12

PAIR_OVERRIDES = "pair_bandwidth_bytes_per_s"


class TopologyError(ValueError):
    """A vertex the cluster graph does not hold, or a bad bandwidth override."""


def gpu_vertex(node_index: int, local_index: int) -> str:
    return f"n{node_index}.g{local_index}"


def build_cluster(node: NodeSpec, n_nodes: int) -> nx.Graph:
    """The graph of `n_nodes` copies of `node` joined by a non-blocking rail-optimised leaf/spine network.

    Each NIC k of every node hangs off leaf k; the spine joins leaves with the whole rail's bandwidth,
    so the network never bottlenecks below the NICs (a full-bisection fat tree).
    """
    if n_nodes < 1:
        raise TopologyError(f"n_nodes must be >= 1, got {n_nodes}")
    g = nx.Graph(node=node.name, gpu=node.gpu, n_nodes=n_nodes, gpus_per_node=node.gpus_per_node)
    g.graph[PAIR_OVERRIDES] = {}
    for i in range(n_nodes):
        _add_node(g, node, i)
    g.add_node("spine", kind="spine", node_index=None)
    for k in range(node.nics_per_node):
        leaf = f"leaf{k}"
        g.add_node(leaf, kind="leaf", node_index=None)
        g.add_edge(leaf, "spine", bandwidth_bytes_per_s=n_nodes * node.nic_bandwidth_bytes_per_s,
                   latency_s=0.0, kind=node.inter_node_kind)
        for i in range(n_nodes):
            g.add_edge(f"n{i}.nic{k}", leaf, bandwidth_bytes_per_s=node.nic_bandwidth_bytes_per_s,
                       latency_s=node.inter_node_latency_s / 2, kind=node.inter_node_kind)
    return nx.freeze(g)


def _add_node(g: nx.Graph, node: NodeSpec, i: int) -> None:
    n = node.gpus_per_node
    gpu_ids = [gpu_vertex(i, j) for j in range(n)]
    for j, v in enumerate(gpu_ids):
        g.add_node(v, kind="gpu", node_index=i, local_index=j, gpu=node.gpu)
    half_latency_s = node.intra_node_latency_s / 2
    if node.intra_node_kind == "nvswitch":
        hub = f"n{i}.nvswitch"
        g.add_node(hub, kind="nvswitch", node_index=i)
        for v in gpu_ids:
            g.add_edge(v, hub, bandwidth_bytes_per_s=node.intra_node_bandwidth_bytes_per_s,
                       latency_s=half_latency_s, kind="nvlink")
    elif node.intra_node_kind == "infinity-fabric":
        # Fully connected, no switch: each GPU's links are shared out evenly over its n-1 peers.
        per_peer = node.intra_node_bandwidth_bytes_per_s / max(n - 1, 1)
        for a in range(n):
            for b in range(a + 1, n):
                g.add_edge(gpu_ids[a], gpu_ids[b], bandwidth_bytes_per_s=per_peer,
                           latency_s=node.intra_node_latency_s, kind="infinity-fabric")
    else:  # pcie, nvlink-bridge: every GPU on the host PCIe fabric
        hub = f"n{i}.pcie"
        g.add_node(hub, kind="pcie-switch", node_index=i)
        pcie_bandwidth = (node.intra_node_bandwidth_bytes_per_s if node.intra_node_kind == "pcie"
                          else node.host_to_device_bandwidth_bytes_per_s)
        for v in gpu_ids:
            g.add_edge(v, hub, bandwidth_bytes_per_s=pcie_bandwidth, latency_s=half_latency_s, kind="pcie")
        if node.intra_node_kind == "nvlink-bridge":
            for a in range(0, n - 1, 2):
                g.add_edge(gpu_ids[a], gpu_ids[a + 1], bandwidth_bytes_per_s=node.intra_node_bandwidth_bytes_per_s,
                           latency_s=node.intra_node_latency_s, kind="nvlink-bridge")
    for k in range(node.nics_per_node):
        g.add_node(f"n{i}.nic{k}", kind="nic", node_index=i, rail=k)
    for j, v in enumerate(gpu_ids):
        # GPUDirect RDMA: GPU j uses the NIC of its share of the rails over its PCIe link.
        k = j * node.nics_per_node // n
        g.add_edge(v, f"n{i}.nic{k}", bandwidth_bytes_per_s=node.host_to_device_bandwidth_bytes_per_s,
                   latency_s=0.0, kind="pcie")


def gpus(g: nx.Graph) -> list[str]:
    """GPU vertices ordered by node, then local index."""
    found = [(d["node_index"], d["local_index"], v) for v, d in g.nodes(data=True) if d.get("kind") == "gpu"]
    return [v for _, _, v in sorted(found)]


def _check(g: nx.Graph, *vertices: str) -> None:
    for v in vertices:
        if v not in g:
            raise TopologyError(f"no vertex {v!r} in the cluster graph (GPUs are named like 'n0.g3')")


def route(g: nx.Graph, a: str, b: str) -> list[str]:
    """Vertices of the lowest-latency route from a to b (fewest hops on ties).

    Traffic between two GPUs of one node stays inside the node: it never detours through NICs.
    """
    _check(g, a, b)
    i, j = g.nodes[a].get("node_index"), g.nodes[b].get("node_index")
    view = g
    if i is not None and i == j:
        view = nx.subgraph_view(g, filter_node=lambda v: g.nodes[v].get("node_index") == i
                                and g.nodes[v].get("kind") != "nic")
    try:
        return nx.shortest_path(view, a, b, weight=lambda u, v, d: d["latency_s"] + _HOP_TIE_BREAK_S)
    except nx.NetworkXNoPath:
        raise TopologyError(f"no route from {a!r} to {b!r} in the cluster graph") from None


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def path_bandwidth_bytes_per_s(g: nx.Graph, a: str, b: str) -> float:
    """Per-direction bandwidth from a to b: a measured override if set, else the route's bottleneck link."""
    _check(g, a, b)
    if a == b:
        return math.inf
    override = g.graph.get(PAIR_OVERRIDES, {}).get(_pair(a, b))
    if override is not None:
        return override
    path = route(g, a, b)
    return min(g.edges[u, v]["bandwidth_bytes_per_s"] for u, v in zip(path, path[1:]))


def path_latency_s(g: nx.Graph, a: str, b: str) -> float:
    """Small-message latency from a to b: the sum of link latencies along the route."""
    if a == b:
        _check(g, a)
        return 0.0
    path = route(g, a, b)
    return sum(g.edges[u, v]["latency_s"] for u, v in zip(path, path[1:]))


def set_link_bandwidth(g: nx.Graph, a: str, b: str, bytes_per_s: float) -> nx.Graph:
    """A new graph in which a<->b has `bytes_per_s` per direction (e.g. a measured figure).

    For adjacent vertices the link itself changes, so every route over it sees the new figure;
    for any other pair (e.g. two GPUs behind an NVSwitch) the end-to-end figure is recorded for that
    pair only, because a measured peer-to-peer rate describes the pair, not one link.
    """
    _check(g, a, b)
    if a == b:
        raise TopologyError(f"cannot set a bandwidth from {a!r} to itself")
    if not (bytes_per_s > 0 and math.isfinite(bytes_per_s)):
        raise TopologyError(f"bandwidth for {a!r}<->{b!r} must be a positive finite bytes/s, got {bytes_per_s!r}")
    h = g.copy()
    h.graph[PAIR_OVERRIDES] = dict(g.graph.get(PAIR_OVERRIDES, {}))
    if h.has_edge(a, b):
        h.edges[a, b]["bandwidth_bytes_per_s"] = float(bytes_per_s)
        h.graph[PAIR_OVERRIDES].pop(_pair(a, b), None)
    else:
        h.graph[PAIR_OVERRIDES][_pair(a, b)] = float(bytes_per_s)
    return nx.freeze(h)
