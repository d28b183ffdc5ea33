"""Collective communication time: latency + bytes / bandwidth per algorithm (alpha-beta model).

Sizes follow the NCCL tests convention (nccl-tests doc/PERFORMANCE.md): all_reduce, broadcast and
send_recv take the buffer size S; all_gather takes the gathered output size; reduce_scatter the
input size; all_to_all the per-rank send buffer. Bus bandwidth factors from the same document.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv", "broadcast")


@dataclass(frozen=True)
class LinkParams:
    """Per-GPU link figures for one node type; bandwidths per direction, achievable (not datasheet)."""

    gpus_per_node: int
    intra_bandwidth_bytes_per_s: float
    intra_latency_s: float
    inter_bandwidth_bytes_per_s: float      # per GPU (its NIC rail)
    inter_latency_s: float

    @classmethod
    def from_node(cls, node, efficiency: float = 0.8) -> "LinkParams":
        """Datasheet node figures × a bus efficiency (NCCL reaches ~80% of NVLink/IB line rate)."""
        nic_per_gpu = node.nics_per_node * node.nic_bandwidth_bytes_per_s / node.gpus_per_node
        return cls(
            gpus_per_node=node.gpus_per_node,
            intra_bandwidth_bytes_per_s=node.intra_node_bandwidth_bytes_per_s * efficiency,
            intra_latency_s=node.intra_node_latency_s,
            inter_bandwidth_bytes_per_s=nic_per_gpu * efficiency,
            inter_latency_s=node.inter_node_latency_s,
        )


def bus_factor(collective: str, n: int) -> float:
    """busbw / algbw: how many times each byte of S crosses the slowest link (nccl-tests PERFORMANCE.md)."""
    if n <= 1:
        return 0.0
    if collective == "all_reduce":
        return 2.0 * (n - 1) / n
    if collective in ("all_gather", "reduce_scatter", "all_to_all"):
        return (n - 1) / n
    return 1.0  # send_recv, broadcast


def ring_time_s(collective: str, size_bytes: float, n: int, bandwidth_bytes_per_s: float, latency_s: float) -> float:
    """Ring algorithm: (steps) × latency + bus_factor × S / bandwidth.

    all_reduce = reduce_scatter + all_gather: 2(n-1) steps; the others n-1 steps; send_recv 1.
    """
    if n <= 1 or size_bytes <= 0:
        return 0.0
    steps = {"all_reduce": 2 * (n - 1), "send_recv": 1, "broadcast": n - 1}.get(collective, n - 1)
    return steps * latency_s + bus_factor(collective, n) * size_bytes / bandwidth_bytes_per_s


def tree_time_s(collective: str, size_bytes: float, n: int, bandwidth_bytes_per_s: float, latency_s: float) -> float:
    """Double binary tree all_reduce (NCCL 2.4+): 2·log2(n) latency hops, each byte sent up and down once."""
    if collective != "all_reduce":
        return ring_time_s(collective, size_bytes, n, bandwidth_bytes_per_s, latency_s)
    if n <= 1 or size_bytes <= 0:
        return 0.0
    return 2.0 * math.ceil(math.log2(n)) * latency_s + 2.0 * size_bytes / bandwidth_bytes_per_s


def hierarchical_time_s(collective: str, size_bytes: float, n: int, links: LinkParams) -> float:
    """Collective over several nodes: intra-node phase on NVLink, inter-node phase on the NICs.

    all_reduce: intra reduce-scatter, inter all-reduce of S/g among n/g nodes (one per rail, in
    parallel), intra all-gather. all_gather / reduce_scatter: intra then inter on S/g.
    all_to_all: (n-g)/n of the buffer leaves the node over the NICs, the rest stays on NVLink.
    """
    g = min(links.gpus_per_node, n)
    nodes = math.ceil(n / g)
    if nodes <= 1:
        return best_time_s(collective, size_bytes, n, links.intra_bandwidth_bytes_per_s, links.intra_latency_s)
    bi, li = links.intra_bandwidth_bytes_per_s, links.intra_latency_s
    bo, lo = links.inter_bandwidth_bytes_per_s, links.inter_latency_s
    if collective == "all_reduce":
        return (ring_time_s("reduce_scatter", size_bytes, g, bi, li)
                + best_time_s("all_reduce", size_bytes / g, nodes, bo, lo)
                + ring_time_s("all_gather", size_bytes, g, bi, li))
    if collective in ("all_gather", "reduce_scatter"):
        return (ring_time_s(collective, size_bytes / nodes, g, bi, li)
                + ring_time_s(collective, size_bytes, nodes, bo, lo) / g * 1.0)
    if collective == "all_to_all":
        remote = (n - g) / n * size_bytes
        local = (g - 1) / n * size_bytes
        return (nodes - 1) * lo + remote / bo + max(0.0, local / bi)
    if collective == "send_recv":
        return lo + size_bytes / bo
    return ring_time_s(collective, size_bytes, n, bo, lo)


def best_time_s(collective: str, size_bytes: float, n: int, bandwidth_bytes_per_s: float, latency_s: float) -> float:
    """The faster of ring and tree, as NCCL's tuner picks per size."""
    return min(ring_time_s(collective, size_bytes, n, bandwidth_bytes_per_s, latency_s),
               tree_time_s(collective, size_bytes, n, bandwidth_bytes_per_s, latency_s))


def collective_time_s(collective: str, size_bytes: float, n: int, links: LinkParams, scope: str = "intra") -> float:
    """Time of one collective over n GPUs; crosses nodes when n exceeds a node or scope is 'inter'."""
    if collective not in COLLECTIVES:
        raise ValueError(f"unknown collective {collective!r}; expected one of {COLLECTIVES}")
    if scope == "inter" or n > links.gpus_per_node:
        if scope == "inter" and n <= links.gpus_per_node:
            # A group of n GPUs each on its own node (e.g. DP across nodes): NIC-bound ring.
            return best_time_s(collective, size_bytes, n, links.inter_bandwidth_bytes_per_s, links.inter_latency_s)
        return hierarchical_time_s(collective, size_bytes, n, links)
    return best_time_s(collective, size_bytes, n, links.intra_bandwidth_bytes_per_s, links.intra_latency_s)
