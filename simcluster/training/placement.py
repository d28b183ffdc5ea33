"""Where the ranks of each parallel group sit, and what one collective over such a group costs.

Ranks are placed tp innermost, then cp, then dp, pp outermost (see plan.py). A group of n ranks
with stride `stride` holds `per_node` members in each node it touches; the collective then runs
on NVLink alone (per_node = n), on the NICs alone (per_node = 1, one GPU per node, each on its own
rail), or hierarchically (intra-node phase on NVLink, inter-node phase over the rails).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from simcluster.cost.collectives import LinkParams, best_time_s, hierarchical_time_s
from simcluster.training.plan import TrainingPlan


@dataclass(frozen=True)
class Group:
    """One communication group: `size` ranks, `per_node` of them in each node."""

    name: str
    size: int
    per_node: int

    @property
    def link(self) -> str:
        """The link resource the collective loads: 'nvlink' inside a node, else the rank's 'nic'."""
        return "nvlink" if self.per_node >= self.size else "nic"


def gpus_per_node_used(plan: TrainingPlan, gpus_per_node: int) -> int:
    """GPUs of each node the plan uses: all of them, unless `nodes` spreads the plan thinner."""
    if plan.nodes:
        return max(1, min(gpus_per_node, plan.n_gpus // plan.nodes))
    return min(gpus_per_node, plan.n_gpus)


def group(name: str, size: int, stride: int, g: int) -> Group:
    """A group of `size` ranks spaced `stride` apart when each node holds g consecutive ranks."""
    if size <= 1:
        return Group(name, 1, 1)
    per_node = max(1, min(size, g // stride)) if stride < g else 1
    return Group(name, size, per_node)


@dataclass(frozen=True)
class Groups:
    tp: Group
    cp: Group
    dp: Group            # gradient reduction of dense weights: the dp×cp ranks of a stage
    ep: Group
    expert_dp: Group     # gradient reduction of expert weights: dp×cp / ep ranks
    pp: Group
    gpus_per_node: int

    def pp_crosses_node(self, stage: int) -> bool:
        """Whether the send from pipeline stage `stage` to `stage + 1` leaves the node."""
        return self.pp.per_node <= 1 or (stage + 1) % self.pp.per_node == 0


def plan_groups(plan: TrainingPlan, gpus_per_node: int) -> Groups:
    g = gpus_per_node_used(plan, gpus_per_node)
    t, c, d = plan.tp, plan.cp, plan.dp
    return Groups(
        tp=group("tp", t, 1, g),
        cp=group("cp", c, t, g),
        dp=group("dp", d * c, t, g),
        ep=group("ep", plan.ep, t, g),
        expert_dp=group("expert_dp", d * c // plan.ep, t * plan.ep, g),
        pp=group("pp", plan.pp, t * c * d, g),
        gpus_per_node=g,
    )


def collective_s(collective: str, size_bytes: float, grp: Group, cm) -> float:
    """Time of one collective over `grp` (nccl-tests size conventions, cost/collectives.py).

    cm: a CostModel. Its measured collective curves (cm.collectives) time groups inside one node
    and groups with one GPU per node (the NIC ring); hierarchical groups use the alpha-beta
    two-level formula on cm.links.
    """
    n = grp.size
    if n <= 1 or size_bytes <= 0:
        return 0.0
    links: LinkParams = cm.links
    measured = getattr(cm, "collectives", None)
    if grp.per_node >= n or grp.per_node == 1:
        scope = "intra" if grp.per_node >= n else "inter"
        if measured is not None:
            return measured.time_s(collective, size_bytes, n, scope)[0]
        if scope == "intra":
            return best_time_s(collective, size_bytes, n, links.intra_bandwidth_bytes_per_s, links.intra_latency_s)
        return best_time_s(collective, size_bytes, n, links.inter_bandwidth_bytes_per_s, links.inter_latency_s)
    return hierarchical_time_s(collective, size_bytes, n, replace(links, gpus_per_node=grp.per_node))


def p2p_s(size_bytes: float, crosses_node: bool, links: LinkParams) -> float:
    """One point-to-point activation send between adjacent pipeline stages."""
    if size_bytes <= 0:
        return 0.0
    if crosses_node:
        return links.inter_latency_s + size_bytes / links.inter_bandwidth_bytes_per_s
    return links.intra_latency_s + size_bytes / links.intra_bandwidth_bytes_per_s


def topology_links(graph, links: LinkParams, n_gpus: int) -> LinkParams:
    """`links` rescaled by the per-pair figures a cluster graph carries (hardware/topology.py).

    A ring collective runs at the pace of its slowest hop, so each bandwidth is scaled by the worst
    ratio, over the hops a ring of the plan's GPUs uses (neighbours inside a node; the same local
    GPU of neighbouring nodes), of the pair's figure (a measured override, set_link_bandwidth) to
    the figure its route's links give. Latencies stay as they are.
    """
    from simcluster.hardware.topology import gpus, path_bandwidth_bytes_per_s, route

    def datasheet(a: str, b: str) -> float:
        path = route(graph, a, b)
        return min(graph.edges[u, v]["bandwidth_bytes_per_s"] for u, v in zip(path, path[1:]))

    verts = gpus(graph)[:n_gpus]
    by_node: dict = {}
    for v in verts:
        by_node.setdefault(graph.nodes[v]["node_index"], []).append(v)
    intra, inter = 1.0, 1.0
    for members in by_node.values():
        for a, b in zip(members, members[1:] + members[:1]):
            if a != b:
                intra = min(intra, path_bandwidth_bytes_per_s(graph, a, b) / datasheet(a, b))
    nodes = sorted(by_node)
    for i, j in zip(nodes, nodes[1:]):
        for a, b in zip(by_node[i], by_node[j]):
            inter = min(inter, path_bandwidth_bytes_per_s(graph, a, b) / datasheet(a, b))
    return replace(links, intra_bandwidth_bytes_per_s=links.intra_bandwidth_bytes_per_s * intra,
                   inter_bandwidth_bytes_per_s=links.inter_bandwidth_bytes_per_s * inter)
