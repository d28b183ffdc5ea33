"""Greedy expert-parallel load balancing in the style of DeepSeek's EPLB (the baseline).

Written from DeepSeek's public description of EPLB (github.com/deepseek-ai/EPLB, README and
`eplb.py`; DeepSeek-V3 technical report §3.4): redundant slots go one by one to the logical
expert with the highest load per replica; replicas are then packed onto GPUs heaviest first,
each onto the currently lightest GPU that still has a free slot. The hierarchical policy, used
when the expert groups divide evenly over nodes, first packs whole groups onto nodes (same
greedy, on group loads), then replicates and packs within each node; the global policy treats
the cluster as one node with one group.

Conventions (EPLB's): a layer's placement is `phy2log[n_physical]`, the logical expert held by
each physical slot, slots laid out GPU-major (GPU g owns slots g*slots_per_gpu ...
(g+1)*slots_per_gpu - 1; node n owns GPUs n*gpus_per_node ...). `logcnt[e]` counts replicas of
expert e, `log2phy[e, r]` is the slot of its r-th replica (-1 padded).
"""

from __future__ import annotations

import numpy as np


def replicate_experts(loads: np.ndarray, n_physical: int) -> tuple[np.ndarray, np.ndarray]:
    """Give `n_physical` slots to the experts of one layer, one replica each first.

    Each extra slot goes to the expert with the highest load per replica (ties: lowest id), which
    minimises the largest load per replica (the greedy is exact for this min-max apportionment).

    Returns (slot_expert[n_physical], replica_rank[n_physical]); slot i < n_logical holds expert i.
    """
    n_logical = len(loads)
    if n_physical < n_logical:
        raise ValueError(f"need at least one slot per expert: {n_physical} < {n_logical}")
    counts = np.ones(n_logical, dtype=np.int64)
    slot_expert = np.empty(n_physical, dtype=np.int64)
    replica_rank = np.zeros(n_physical, dtype=np.int64)
    slot_expert[:n_logical] = np.arange(n_logical)
    for slot in range(n_logical, n_physical):
        expert = int(np.argmax(loads / counts))
        slot_expert[slot] = expert
        replica_rank[slot] = counts[expert]
        counts[expert] += 1
    return slot_expert, replica_rank


def replica_counts(loads: np.ndarray, n_physical: int) -> np.ndarray:
    """Replica count per expert from `replicate_experts` (the min-max-load-per-replica allocation)."""
    slot_expert, _ = replicate_experts(loads, n_physical)
    return np.bincount(slot_expert, minlength=len(loads))


def balanced_packing(weights: np.ndarray, n_packs: int) -> tuple[np.ndarray, np.ndarray]:
    """Put items into `n_packs` packs of equal size, heaviest item first into the lightest pack.

    Returns (pack[n_items], rank_in_pack[n_items]).
    """
    n_items = len(weights)
    if n_items % n_packs:
        raise ValueError(f"{n_items} items do not split evenly into {n_packs} packs")
    per_pack = n_items // n_packs
    pack_weight = np.zeros(n_packs)
    pack_size = np.zeros(n_packs, dtype=np.int64)
    pack = np.empty(n_items, dtype=np.int64)
    rank = np.empty(n_items, dtype=np.int64)
    # A stable sort keeps equal-weight items in id order, so results are deterministic.
    for item in np.argsort(-np.asarray(weights, dtype=float), kind="stable"):
        open_weight = np.where(pack_size < per_pack, pack_weight, np.inf)
        target = int(np.argmin(open_weight))
        pack[item] = target
        rank[item] = pack_size[target]
        pack_weight[target] += weights[item]
        pack_size[target] += 1
    return pack, rank


def eplb_layer(
    loads: np.ndarray,
    n_physical: int,
    n_nodes: int,
    gpus_per_node: int,
    n_groups: int | None,
    hierarchical: bool,
) -> np.ndarray:
    """EPLB placement of one layer; returns phy2log[n_physical].

    hierarchical=True needs n_groups experts groups (contiguous expert ids) with n_groups a
    multiple of n_nodes; hierarchical=False is the global policy.
    """
    loads = np.asarray(loads, dtype=float)
    n_logical = len(loads)
    n_gpus = n_nodes * gpus_per_node
    if not hierarchical:
        n_nodes, gpus_per_node, n_groups = 1, n_gpus, 1
    if n_groups is None or n_logical % n_groups or n_groups % n_nodes:
        raise ValueError(
            f"hierarchical EPLB needs n_groups dividing {n_logical} experts and divisible by"
            f" {n_nodes} nodes; got n_groups={n_groups}"
        )
    if n_physical % n_gpus:
        raise ValueError(f"{n_physical} slots do not split evenly over {n_gpus} GPUs")
    group_size = n_logical // n_groups
    slots_per_node = n_physical // n_nodes
    slots_per_gpu = n_physical // n_gpus
    group_load = loads.reshape(n_groups, group_size).sum(axis=1)
    group_node, group_rank = balanced_packing(group_load, n_nodes)
    groups_per_node = n_groups // n_nodes
    if slots_per_node < groups_per_node * group_size:
        raise ValueError(f"{slots_per_node} slots per node cannot hold one replica per expert")
    phy2log = np.empty(n_physical, dtype=np.int64)
    for node in range(n_nodes):
        # Experts of this node's groups, in the order the groups were packed.
        groups = sorted(np.flatnonzero(group_node == node), key=lambda g: group_rank[g])
        experts = np.concatenate([np.arange(g * group_size, (g + 1) * group_size) for g in groups])
        slot_local, _ = replicate_experts(loads[experts], slots_per_node)
        counts = np.bincount(slot_local, minlength=len(experts))
        replica_load = loads[experts][slot_local] / counts[slot_local]
        gpu, rank = balanced_packing(replica_load, gpus_per_node)
        slots = node * slots_per_node + gpu * slots_per_gpu + rank
        phy2log[slots] = experts[slot_local]
    return phy2log


def eplb(
    loads: np.ndarray,
    n_physical: int,
    n_nodes: int,
    gpus_per_node: int,
    n_groups: int | None = None,
    policy: str = "auto",
) -> np.ndarray:
    """EPLB placement for every layer; returns phy2log[layers, n_physical].

    policy: 'hierarchical', 'global', or 'auto' (hierarchical when n_groups is given and a
    multiple of n_nodes, as DeepSeek's EPLB does, else global).
    """
    loads = np.atleast_2d(np.asarray(loads, dtype=float))
    if policy == "auto":
        hierarchical = n_groups is not None and n_groups % n_nodes == 0
    elif policy in ("hierarchical", "global"):
        hierarchical = policy == "hierarchical"
    else:
        raise ValueError(f"unknown EPLB policy {policy!r}; expected 'hierarchical', 'global', 'auto'")
    return np.stack(
        [eplb_layer(row, n_physical, n_nodes, gpus_per_node, n_groups, hierarchical) for row in loads]
    )


def logcnt_from_phy2log(phy2log: np.ndarray, n_logical: int) -> np.ndarray:
    """Replica count per logical expert, [layers, n_logical]."""
    phy2log = np.atleast_2d(phy2log)
    return np.stack([np.bincount(row, minlength=n_logical) for row in phy2log])


def log2phy_from_phy2log(phy2log: np.ndarray, n_logical: int) -> np.ndarray:
    """Slots of each expert's replicas in slot order, [layers, n_logical, max_replicas], -1 padded."""
    phy2log = np.atleast_2d(phy2log)
    logcnt = logcnt_from_phy2log(phy2log, n_logical)
    width = int(logcnt.max())
    log2phy = np.full((phy2log.shape[0], n_logical, width), -1, dtype=np.int64)
    for layer, row in enumerate(phy2log):
        filled = np.zeros(n_logical, dtype=np.int64)
        for slot, expert in enumerate(row):
            log2phy[layer, expert, filled[expert]] = slot
            filled[expert] += 1
    return log2phy
