"""Expert placement for MoE layers: the ILP or DeepSeek-style greedy EPLB, one entry point.

`place_experts` is what the CLI (`simcluster place-experts`) and the planner call. The program of
one layer is in placement_ilp.py, the greedy baseline in eplb.py, the metrics in expert_layout.py.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from simcluster.optimize.eplb import eplb, log2phy_from_phy2log, logcnt_from_phy2log
from simcluster.optimize.expert_layout import (
    balancedness,
    cross_node_fraction,
    gpu_loads,
    migrated_slots,
)
from simcluster.optimize.placement_ilp import LayerProgram, objective_of
from simcluster.optimize.placement_search import solve_layer

POLICIES = ("ilp", "eplb-hierarchical", "eplb-global")


class PlacementInputError(ValueError):
    """Placement arguments that do not fit together; the message is one line naming the key."""


@dataclass
class PlacementResult:
    """A placement of every layer in EPLB conventions, with per-layer records.

    phy2log [layers, n_physical]: logical expert per physical slot, GPU-major (GPU g owns slots
    g*slots_per_gpu ...). log2phy [layers, n_logical, max_replicas]: slots per expert, -1 padded.
    logcnt [layers, n_logical]: replicas per expert. gpu_loads [layers, n_gpus]: tokens per GPU.
    layers: one flat record per layer (see `place_experts`).
    """

    phy2log: np.ndarray
    log2phy: np.ndarray
    logcnt: np.ndarray
    gpu_loads: np.ndarray
    layers: list[dict]
    policy: str
    n_nodes: int
    gpus_per_node: int
    total_time_s: float
    summary: dict = field(default_factory=dict)

    def to_json_dict(self) -> dict:
        """Plain JSON-ready dict (lists and numbers only)."""
        return {
            "policy": self.policy,
            "n_nodes": self.n_nodes,
            "gpus_per_node": self.gpus_per_node,
            "n_physical": int(self.phy2log.shape[1]),
            "n_logical": int(self.logcnt.shape[1]),
            "total_time_s": self.total_time_s,
            "summary": self.summary,
            "phy2log": self.phy2log.tolist(),
            "log2phy": self.log2phy.tolist(),
            "logcnt": self.logcnt.tolist(),
            "gpu_loads": self.gpu_loads.tolist(),
            "layers": self.layers,
        }


def place_experts(
    loads: np.ndarray,
    n_nodes: int,
    gpus_per_node: int,
    n_physical: int,
    n_groups: int | None = None,
    policy: str = "ilp",
    time_limit_s: float = 60.0,
    current: np.ndarray | None = None,
    source_fractions: np.ndarray | None = None,
    cross_node_weight: float = 0.01,
    migration_weight: float = 0.1,
    workers: int = 1,
    count_window: int = 1,
    max_assignment_vars: int = 1000,
    lp_dir: str | None = None,
    solver: str | None = None,
    max_steps_per_layer: int | None = None,
    time_limit_per_layer_s: float | None = None,
) -> PlacementResult:
    """Place the physical expert slots of every MoE layer on the GPUs.

    loads [layers, n_logical]: tokens routed to each logical expert (see expert_loads.py).
    n_nodes, gpus_per_node: cluster shape; GPUs are numbered node-major.
    n_physical: expert slots in total (n_logical + redundant), a multiple of n_nodes*gpus_per_node.
    n_groups: expert groups (contiguous ids) for EPLB's hierarchical policy.
    policy: 'ilp' (the program of placement_ilp.py, warm-started from EPLB and never worse than
      it), 'eplb-hierarchical' (needs n_groups divisible by n_nodes), 'eplb-global'.
    time_limit_s: wall-clock budget for all layers together (ILP only); each layer gets an equal
      share of what is left when it starts, so the whole call ends near this budget.
    current [layers, n_physical]: the placement in service now; with migration_weight > 0 the ILP
      pays migration_weight * (replicas copied onto a new GPU / n_physical) to move away from it.
    source_fractions [layers, n_logical, n_nodes] or [n_logical, n_nodes]: where each expert's
      tokens originate (default uniform over nodes).
    cross_node_weight: objective weight of the cross-node token fraction (the peak-over-mean GPU
      load has weight 1 and is capped at the greedy baseline's, so this only trades among
      placements at least as balanced as EPLB).
    workers: processes solving layers in parallel (HiGHS gets one thread each).
    count_window: replica counts the program may choose besides the greedy one (± window).
    max_assignment_vars: programs with at most this many assignment integers are first solved
      whole (proving small cases optimal, with the solver's bound); the rest of the time, and all
      of it for larger programs, goes to neighbourhood search (see placement_search.py).
    lp_dir: write each layer's program to <lp_dir>/layer_<l>.lp before solving.
    solver: 'highs' or 'cbc' (default: HiGHS when installed).
    max_steps_per_layer: stop each layer's neighbourhood search after this many steps (with a
      generous time limit this makes results independent of machine speed).
    time_limit_per_layer_s: give each layer this much instead of a share of `time_limit_s`.

    The CLI maps `simcluster place-experts --nodes N --gpus G --slots S` to n_nodes=N,
    gpus_per_node=G // N (G is the total GPU count) and n_physical=S (total slots).

    Each record of `result.layers`: layer, policy_used ('ilp', 'eplb-hierarchical',
    'eplb-global' or 'current'), balancedness (mean/max GPU load), max_gpu_load, mean_gpu_load
    (tokens), cross_node_fraction, migrated_slots (None without `current`), objective (the
    program's objective: peak over mean + weighted traffic and migration), status ('optimal',
    'feasible' or 'heuristic' for the greedy policies), gap (relative, against the best valid
    bound; None for the greedy policies), solve_time_s, method ('whole', 'neighbourhood',
    'whole+neighbourhood' or 'greedy') and iterations (neighbourhood steps).

    >>> from simcluster.optimize.expert_loads import generate_loads
    >>> result = place_experts(generate_loads(2, 8, 1000, seed=0), 2, 2, 12, time_limit_s=2)
    >>> result.phy2log.shape, all(r["balancedness"] <= 1 for r in result.layers)
    ((2, 12), True)
    """
    started = time.perf_counter()
    loads = _check_inputs(loads, n_nodes, gpus_per_node, n_physical, n_groups, policy, current)
    n_layers, n_logical = loads.shape
    sources = _layer_sources(source_fractions, n_layers, n_logical, n_nodes)
    hierarchical_ok = n_groups is not None and n_groups % n_nodes == 0 and n_logical % n_groups == 0
    baselines = {"eplb-global": eplb(loads, n_physical, n_nodes, gpus_per_node, n_groups, "global")}
    if hierarchical_ok:
        baselines["eplb-hierarchical"] = eplb(
            loads, n_physical, n_nodes, gpus_per_node, n_groups, "hierarchical"
        )
    heuristic_time_s = time.perf_counter() - started

    programs = [
        LayerProgram(
            loads=loads[layer],
            n_nodes=n_nodes,
            gpus_per_node=gpus_per_node,
            n_physical=n_physical,
            source_fractions=sources[layer],
            current=None if current is None else np.asarray(current[layer], dtype=np.int64),
            cross_node_weight=cross_node_weight,
            migration_weight=migration_weight if current is not None else 0.0,
            count_window=count_window,
            max_assignment_vars=max_assignment_vars,
        )
        for layer in range(n_layers)
    ]
    if policy == "ilp":
        deadline = time.time() + time_limit_s - (time.perf_counter() - started)
        tasks = [
            (layer, programs[layer], _layer_starts(baselines, current, layer), deadline,
             n_layers, max(workers, 1), lp_dir, solver, max_steps_per_layer,
             time_limit_per_layer_s)
            for layer in range(n_layers)
        ]
        if workers > 1 and n_layers > 1:
            # Spawned, not forked: a forked child would inherit the parent's solver threads.
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
                outcomes = list(pool.map(_solve_task, tasks))
        else:
            outcomes = [_solve_task(task) for task in tasks]
    else:
        per_layer_s = heuristic_time_s / n_layers
        outcomes = [
            (baselines[policy][layer], policy, {"status": "heuristic", "gap": None,
                                                "solve_time_s": per_layer_s,
                                                "method": "greedy", "iterations": 1})
            for layer in range(n_layers)
        ]

    phy2log = np.stack([row for row, _, _ in outcomes]).astype(np.int64)
    n_gpus = n_nodes * gpus_per_node
    per_gpu = np.stack([gpu_loads(loads[l], phy2log[l], n_gpus) for l in range(n_layers)])
    records = []
    for layer, (row, used, solve_info) in enumerate(outcomes):
        records.append({
            "layer": layer,
            "policy_used": used,
            "balancedness": balancedness(per_gpu[layer]),
            "max_gpu_load": float(per_gpu[layer].max()),
            "mean_gpu_load": float(per_gpu[layer].mean()),
            "cross_node_fraction": cross_node_fraction(
                loads[layer], row, n_nodes, gpus_per_node, sources[layer]
            ),
            "migrated_slots": None if current is None
            else migrated_slots(row, current[layer], n_logical, n_gpus),
            "objective": objective_of(programs[layer], row),
            **solve_info,
        })
    total_time_s = time.perf_counter() - started
    return PlacementResult(
        phy2log=phy2log,
        log2phy=log2phy_from_phy2log(phy2log, n_logical),
        logcnt=logcnt_from_phy2log(phy2log, n_logical),
        gpu_loads=per_gpu,
        layers=records,
        policy=policy,
        n_nodes=n_nodes,
        gpus_per_node=gpus_per_node,
        total_time_s=total_time_s,
        summary=_summary(records),
    )


def _solve_task(task: tuple) -> tuple[np.ndarray, str, dict]:
    """One layer in a worker: share the time left fairly with the layers still queued."""
    layer, program, starts, deadline, n_layers, workers, lp_dir, solver, max_steps, per_layer_s = task
    if per_layer_s is None:
        layers_left_here = math.ceil((n_layers - layer) / workers)
        # A tenth of the share is left for building programs and reading results.
        budget_s = 0.9 * max((deadline - time.time()) / max(layers_left_here, 1), 0.0)
    else:
        budget_s = per_layer_s
    lp_path = None if lp_dir is None else f"{lp_dir}/layer_{layer}.lp"
    row, used, record = solve_layer(program, starts, budget_s, lp_path, solver, seed=layer,
                                    max_steps=max_steps)
    return row, used, record


def _layer_starts(baselines: dict, current: np.ndarray | None, layer: int) -> dict:
    starts = {name: rows[layer] for name, rows in baselines.items()}
    if current is not None:
        row = np.asarray(current[layer], dtype=np.int64)
        # A current placement missing an expert is no valid start (it still prices migration).
        if np.bincount(row, minlength=len(starts["eplb-global"])).min() >= 1:
            starts["current"] = row
    return starts


def _layer_sources(source_fractions, n_layers: int, n_logical: int, n_nodes: int) -> list:
    if source_fractions is None:
        return [None] * n_layers
    sources = np.asarray(source_fractions, dtype=float)
    if sources.shape == (n_logical, n_nodes):
        sources = np.broadcast_to(sources, (n_layers, n_logical, n_nodes))
    if sources.shape != (n_layers, n_logical, n_nodes):
        raise PlacementInputError(
            f"source_fractions: shape {sources.shape}; expected ({n_layers}, {n_logical}, {n_nodes})"
            f" or ({n_logical}, {n_nodes})"
        )
    if (sources < 0).any() or not np.allclose(sources.sum(axis=2), 1.0):
        raise PlacementInputError("source_fractions: each expert's fractions must be >= 0 and sum to 1")
    return list(sources)


def _check_inputs(loads, n_nodes, gpus_per_node, n_physical, n_groups, policy, current) -> np.ndarray:
    loads = np.atleast_2d(np.asarray(loads, dtype=float))
    if loads.ndim != 2 or loads.size == 0:
        raise PlacementInputError(f"loads: shape {loads.shape}; expected [layers, n_logical]")
    if (loads < 0).any() or not np.isfinite(loads).all():
        raise PlacementInputError("loads: expected finite non-negative token counts")
    n_logical = loads.shape[1]
    if policy not in POLICIES:
        raise PlacementInputError(f"policy: {policy!r}; expected one of {', '.join(POLICIES)}")
    if n_nodes < 1 or gpus_per_node < 1:
        raise PlacementInputError(f"nodes/gpus: need >= 1, got n_nodes={n_nodes}, gpus_per_node={gpus_per_node}")
    n_gpus = n_nodes * gpus_per_node
    if n_physical < n_logical or n_physical % n_gpus:
        raise PlacementInputError(
            f"slots: {n_physical} physical slots; expected a multiple of {n_gpus} GPUs that is"
            f" >= {n_logical} logical experts"
        )
    if policy == "eplb-hierarchical" and (
        n_groups is None or n_groups % n_nodes or n_logical % n_groups
    ):
        raise PlacementInputError(
            f"groups: eplb-hierarchical needs n_groups dividing {n_logical} experts and divisible"
            f" by {n_nodes} nodes; got {n_groups}"
        )
    if current is not None:
        current = np.asarray(current)
        if current.shape != (loads.shape[0], n_physical) or current.min() < 0 or current.max() >= n_logical:
            raise PlacementInputError(
                f"current: expected phy2log of shape ({loads.shape[0]}, {n_physical}) with ids"
                f" in [0, {n_logical})"
            )
    return loads


def _summary(records: list[dict]) -> dict:
    gaps = [r["gap"] for r in records if r["gap"] is not None]
    used = {}
    for r in records:
        used[r["policy_used"]] = used.get(r["policy_used"], 0) + 1
    return {
        "mean_balancedness": float(np.mean([r["balancedness"] for r in records])),
        "min_balancedness": float(np.min([r["balancedness"] for r in records])),
        "mean_cross_node_fraction": float(np.mean([r["cross_node_fraction"] for r in records])),
        "mean_gap": float(np.mean(gaps)) if gaps else None,
        "max_gap": float(np.max(gaps)) if gaps else None,
        "layers_by_policy_used": used,
    }
