"""Reading an expert placement: replicas per GPU, GPU loads, balancedness, cross-node traffic.

A layer's placement is `phy2log[n_physical]` in EPLB's GPU-major slot layout (see eplb.py).
Loads are split evenly among an expert's replicas, as EPLB assumes; traffic assumes a token is
served on its own node whenever that node holds a replica of the expert.
"""

from __future__ import annotations

import numpy as np


def counts_matrix(phy2log_row: np.ndarray, n_logical: int, n_gpus: int) -> np.ndarray:
    """Replicas of each expert on each GPU, int [n_logical, n_gpus]."""
    row = np.asarray(phy2log_row, dtype=np.int64)
    slots_per_gpu = len(row) // n_gpus
    gpu_of_slot = np.arange(len(row)) // slots_per_gpu
    counts = np.zeros((n_logical, n_gpus), dtype=np.int64)
    np.add.at(counts, (row, gpu_of_slot), 1)
    return counts


def phy2log_from_counts(counts: np.ndarray, previous_row: np.ndarray | None = None) -> np.ndarray:
    """Lay out a replicas-per-GPU matrix as phy2log, keeping `previous_row`'s slots where it can.

    An expert that stays on a GPU keeps the slot index it had there, so an unchanged placement
    gives back the same phy2log and a changed one moves as few slots as the counts require.
    """
    counts = np.asarray(counts, dtype=np.int64)
    n_logical, n_gpus = counts.shape
    per_gpu = counts.sum(axis=0)
    if len(set(per_gpu.tolist())) != 1:
        raise ValueError(f"GPUs hold different numbers of replicas: {sorted(set(per_gpu.tolist()))}")
    slots_per_gpu = int(per_gpu[0])
    row = np.full(n_gpus * slots_per_gpu, -1, dtype=np.int64)
    for gpu in range(n_gpus):
        base = gpu * slots_per_gpu
        left = counts[:, gpu].copy()
        if previous_row is not None:
            for slot in range(base, base + slots_per_gpu):
                expert = previous_row[slot]
                if left[expert] > 0:
                    row[slot] = expert
                    left[expert] -= 1
        free = [s for s in range(base, base + slots_per_gpu) if row[s] < 0]
        experts = np.repeat(np.arange(n_logical), left)
        row[free] = experts
    return row


def gpu_loads(loads_row: np.ndarray, phy2log_row: np.ndarray, n_gpus: int) -> np.ndarray:
    """Tokens each GPU serves, float [n_gpus], with each expert's load split evenly over replicas."""
    loads_row = np.asarray(loads_row, dtype=float)
    counts = counts_matrix(phy2log_row, len(loads_row), n_gpus)
    replicas = counts.sum(axis=1)
    return (loads_row / replicas) @ counts


def balancedness(per_gpu_loads: np.ndarray) -> float:
    """Mean over max GPU load (1 is perfect); DeepSeek's EPLB README reports the same ratio."""
    peak = float(np.max(per_gpu_loads))
    return 1.0 if peak <= 0 else float(np.mean(per_gpu_loads)) / peak


def nodes_holding(
    phy2log_row: np.ndarray, n_logical: int, n_nodes: int, gpus_per_node: int
) -> np.ndarray:
    """bool [n_logical, n_nodes]: does node n hold at least one replica of expert e."""
    counts = counts_matrix(phy2log_row, n_logical, n_nodes * gpus_per_node)
    return counts.reshape(n_logical, n_nodes, gpus_per_node).sum(axis=2) > 0


def uniform_sources(n_logical: int, n_nodes: int) -> np.ndarray:
    """Tokens of every expert originate evenly over nodes (data-parallel attention on all GPUs)."""
    return np.full((n_logical, n_nodes), 1.0 / n_nodes)


def cross_node_fraction(
    loads_row: np.ndarray,
    phy2log_row: np.ndarray,
    n_nodes: int,
    gpus_per_node: int,
    source_fractions: np.ndarray | None = None,
) -> float:
    """Fraction of routed tokens that must leave their node to reach an expert replica.

    source_fractions [n_logical, n_nodes]: share of expert e's tokens that originate on node n
    (default uniform). A token crosses nodes exactly when its node has no replica of the expert.
    """
    loads_row = np.asarray(loads_row, dtype=float)
    total = loads_row.sum()
    if total <= 0:
        return 0.0
    if source_fractions is None:
        source_fractions = uniform_sources(len(loads_row), n_nodes)
    held = nodes_holding(phy2log_row, len(loads_row), n_nodes, gpus_per_node)
    crossing = (loads_row[:, None] * source_fractions * ~held).sum()
    return float(crossing / total)


def migrated_slots(phy2log_row: np.ndarray, current_row: np.ndarray, n_logical: int, n_gpus: int) -> int:
    """Replicas that must be copied onto a GPU that did not hold them (expert weights to move)."""
    new = counts_matrix(phy2log_row, n_logical, n_gpus)
    old = counts_matrix(current_row, n_logical, n_gpus)
    return int(np.maximum(new - old, 0).sum())
