"""The expert placement program of one MoE layer (PuLP MILP, exact under even load split).

Load per replica, L_e / r_e, is nonlinear in the replica count r_e. The program stays exact by
choosing r_e from a small candidate set K_e with binaries z[e,k], and assigning replicas with
integers u[e,k,g] = replicas of expert e on GPU g *if* e gets k replicas (0 otherwise):

    sum_k z[e,k] = 1                                   choose_<e>
    sum_g u[e,k,g] = k * z[e,k]                        replicas_<e>_<k>
    sum_{e,k} u[e,k,g] = slots_per_gpu                 slots_<g>
    sum_{e,k} (L_e / k) * u[e,k,g] <= T                load_<g>     (L in units of mean GPU load)
    load_<g> - load_<h> >= 0                           order_<g>_<h> (GPUs g < h of one node)
    max(1, L_e / max K_e) <= T <= T_baseline           bounds of T (T_baseline: best start's peak)

so GPU g's load sum_e L_e * x[e,g] / r_e is a linear expression in u, exactly. The order rows
remove the interchangeable GPUs of a node (only without a current placement, which tells them
apart). Objective:

    T + cross_node_weight * (cross-node tokens / all tokens)
      + migration_weight * (replicas copied onto a new GPU / n_physical)

Cross-node traffic: h[e,n] = 1 only if node n holds a replica of e (holds_<e>_<n>: h <= sum of
u on n); the tokens of e from nodes with h = 0 cross nodes. Migration (moved_<e>_<g>):
m[e,g] >= x[e,g] - current[e,g]. Dispatch is modelled as EPLB does for load (tokens split
evenly over replicas) and as local-first for traffic (a token stays on its node when the node
holds a replica); co-activation of experts by one token is not modelled.

K_e holds the min-max-per-replica count of `replicate_experts` ± `count_window`, plus the counts
of every start. With count_window=0 the program is the exact assignment for fixed counts. The cap
T <= T_baseline and a warm start from the best greedy placement make the result never worse on
balancedness than the starts it was given. Only `T` is bounded by the baseline; the secondary
terms trade only among placements at least that balanced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pulp

from simcluster.optimize.eplb import replica_counts
from simcluster.optimize.expert_layout import (
    counts_matrix,
    cross_node_fraction,
    migrated_slots,
    uniform_sources,
)
from simcluster.optimize.solver import new_variable


@dataclass(frozen=True)
class LayerProgram:
    """Inputs of one layer's program, all in tokens (loads) and counts."""

    loads: np.ndarray  # [n_logical] tokens
    n_nodes: int
    gpus_per_node: int
    n_physical: int
    source_fractions: np.ndarray | None = None  # [n_logical, n_nodes]
    current: np.ndarray | None = None  # phy2log row
    cross_node_weight: float = 0.0
    migration_weight: float = 0.0
    count_window: int = 1
    max_assignment_vars: int = 1000  # above this, solve by neighbourhoods (placement_search.py)

    @property
    def n_gpus(self) -> int:
        return self.n_nodes * self.gpus_per_node

    @property
    def slots_per_gpu(self) -> int:
        return self.n_physical // self.n_gpus


def candidate_counts(program: LayerProgram, start_rows: list[np.ndarray]) -> list[list[int]]:
    """K_e per expert: the greedy count ± `count_window`, plus the counts each start uses, so
    every start is a feasible point of the program."""
    loads = np.asarray(program.loads, dtype=float)
    n_logical = len(loads)
    greedy = replica_counts(loads, program.n_physical)
    max_count = program.n_physical - n_logical + 1
    sets = [
        {int(greedy[e]) + d for d in range(-program.count_window, program.count_window + 1)
         if 1 <= int(greedy[e]) + d <= max_count}
        for e in range(n_logical)
    ]
    for row in start_rows:
        for e, count in enumerate(np.bincount(row, minlength=n_logical)):
            sets[e].add(int(count))
    return [sorted(s) for s in sets]


def peak_over_mean(loads: np.ndarray, row: np.ndarray, n_gpus: int) -> float:
    """Max GPU load over mean GPU load of a placement row (1 = perfectly balanced)."""
    counts = counts_matrix(row, len(loads), n_gpus)
    per_gpu = (loads / counts.sum(axis=1)) @ counts
    mean = per_gpu.mean()
    return float(per_gpu.max() / mean) if mean > 0 else 1.0


def objective_of(program: LayerProgram, row: np.ndarray) -> float:
    """The program's objective evaluated on a placement row (same terms, same weights)."""
    loads = np.asarray(program.loads, dtype=float)
    value = peak_over_mean(loads, row, program.n_gpus)
    if program.cross_node_weight > 0 and loads.sum() > 0:
        value += program.cross_node_weight * cross_node_fraction(
            loads, row, program.n_nodes, program.gpus_per_node, program.source_fractions
        )
    if program.migration_weight > 0 and program.current is not None:
        moved = migrated_slots(row, program.current, len(loads), program.n_gpus)
        value += program.migration_weight * moved / program.n_physical
    return value


def peak_floor(program: LayerProgram, counts: list[list[int]]) -> float:
    """A lower bound on the peak-over-mean of any placement the program allows: the peak is at
    least the mean, and at least the load of one replica of the hottest expert."""
    loads = np.asarray(program.loads, dtype=float)
    if loads.sum() <= 0:
        return 1.0
    norm = loads * program.n_gpus / loads.sum()
    return max([1.0] + [norm[e] / max(counts[e]) for e in range(len(loads))])


def build_program(
    program: LayerProgram,
    counts: list[list[int]],
    peak_cap: float,
    incumbent: np.ndarray | None = None,
    free_gpus: list[int] | None = None,
    local_peak: bool = False,
) -> tuple[pulp.LpProblem, dict]:
    """Build the layer's MILP over `free_gpus` (default all), the rest fixed as in `incumbent`.

    counts: candidate replica counts per expert (`candidate_counts`). incumbent [n_logical,
    n_gpus]: replicas per GPU of the placement being improved; an expert with replicas on a fixed
    GPU keeps its count. The objective includes the fixed part as constants, so its value is the
    full layer objective of the placement the solution describes, unless local_peak=True: then
    T bounds only the free GPUs (a neighbourhood step can lower its own peak even while a fixed
    GPU sets the layer's peak).
    Returns (problem, variables by kind).
    """
    loads = np.asarray(program.loads, dtype=float)
    n_logical, n_gpus, n_nodes = len(loads), program.n_gpus, program.n_nodes
    per_node = program.gpus_per_node
    free = list(range(n_gpus)) if free_gpus is None else sorted(free_gpus)
    fixed = [g for g in range(n_gpus) if g not in set(free)]
    if fixed and incumbent is None:
        raise ValueError("a program over a subset of GPUs needs the incumbent placement")
    x_fixed = np.zeros((n_logical, n_gpus), dtype=np.int64)
    if fixed:
        x_fixed[:, fixed] = incumbent[:, fixed]
    outside = x_fixed.sum(axis=1)
    totals = incumbent.sum(axis=1) if incumbent is not None else None
    norm = loads * n_gpus / loads.sum() if loads.sum() > 0 else np.zeros(n_logical)
    slots = program.slots_per_gpu

    fixed_peak = 0.0
    if fixed:
        fixed_peak = float(((norm / np.maximum(totals, 1)) @ x_fixed[:, fixed]).max())
    prob = pulp.LpProblem("expert_placement", pulp.LpMinimize)
    floor = 0.0 if local_peak else max(peak_floor(program, counts), fixed_peak)
    peak = new_variable(prob, "peak_over_mean", low=min(floor, peak_cap), up=peak_cap)
    z, u = {}, {}
    gpu_terms = {g: [] for g in free}
    load_terms = {g: [] for g in free}
    on_gpu = {}
    for e in range(n_logical):
        # An expert also held by a fixed GPU keeps its count; the rest choose among candidates.
        choices = [int(totals[e])] if outside[e] > 0 else [
            k for k in counts[e] if k <= len(free) * slots
        ]
        if outside[e] > 0 and choices[0] == outside[e]:
            continue  # all its replicas are on fixed GPUs
        for k in choices:
            if len(choices) > 1:
                z[e, k] = new_variable(prob, f"z_{e}_{k}", cat=pulp.LpBinary)
            for g in free:
                var = new_variable(
                    prob, f"u_{e}_{k}_{g}", low=0, up=min(k, slots), cat=pulp.LpInteger
                )
                u[e, k, g] = var
                gpu_terms[g].append(var)
                load_terms[g].append((var, norm[e] / k))
                on_gpu.setdefault((e, g), []).append(var)
            chosen = z[e, k] if len(choices) > 1 else 1
            prob += (
                pulp.lpSum(u[e, k, g] for g in free) == (k - int(outside[e])) * chosen,
                f"replicas_{e}_{k}",
            )
        if len(choices) > 1:
            prob += pulp.lpSum(z[e, k] for k in choices) == 1, f"choose_{e}"
    for g in free:
        prob += pulp.lpSum(gpu_terms[g]) == slots, f"slots_{g}"
        prob += pulp.LpAffineExpression(load_terms[g]) - peak <= 0, f"load_{g}"
    if symmetry_breaking(program):
        # Free GPUs of one node are interchangeable; ordering their loads removes the copies of
        # every solution that differ only by a permutation, which otherwise stalls the proof.
        for g, h in zip(free, free[1:]):
            if g // per_node == h // per_node:
                prob += (
                    pulp.LpAffineExpression(load_terms[g])
                    - pulp.LpAffineExpression(load_terms[h]) >= 0,
                    f"order_{g}_{h}",
                )

    objective, constant = [(peak, 1.0)], 0.0
    holds = {}
    if program.cross_node_weight > 0 and loads.sum() > 0:
        sources = program.source_fractions
        if sources is None:
            sources = uniform_sources(n_logical, n_nodes)
        weight = program.cross_node_weight * (loads / loads.sum())[:, None] * sources
        held_fixed = x_fixed.reshape(n_logical, n_nodes, per_node).sum(axis=2) > 0
        # weight * (1 - h): tokens of e from node n cross unless n holds a replica; pairs a
        # fixed replica serves cost nothing, the rest cost weight unless h[e,n] = 1.
        constant += float(weight[~held_fixed].sum())
        placed = sorted({e for (e, _k, _g) in u})
        free_nodes = sorted({g // per_node for g in free})
        for e in placed:
            for n in free_nodes:
                if weight[e, n] <= 0 or held_fixed[e, n]:
                    continue
                terms = [v for g in range(n * per_node, (n + 1) * per_node)
                         for v in on_gpu.get((e, g), ())]
                holds[e, n] = new_variable(prob, f"h_{e}_{n}", cat=pulp.LpBinary)
                prob += holds[e, n] - pulp.lpSum(terms) <= 0, f"holds_{e}_{n}"
                objective.append((holds[e, n], -float(weight[e, n])))
    moved = {}
    if program.migration_weight > 0 and program.current is not None:
        current = counts_matrix(program.current, n_logical, n_gpus)
        weight = program.migration_weight / program.n_physical
        constant += weight * float(np.maximum(x_fixed[:, fixed] - current[:, fixed], 0).sum())
        for e in range(n_logical):
            for g in free:
                terms = on_gpu.get((e, g), [])
                if not terms:
                    continue
                moved[e, g] = new_variable(prob, f"m_{e}_{g}", low=0)
                prob += moved[e, g] - pulp.lpSum(terms) >= -int(current[e, g]), f"moved_{e}_{g}"
                objective.append((moved[e, g], weight))
    prob += pulp.LpAffineExpression(objective, constant=constant)
    variables = {"peak": peak, "z": z, "u": u, "holds": holds, "moved": moved,
                 "free": free, "x_fixed": x_fixed}
    return prob, variables


def symmetry_breaking(program: LayerProgram) -> bool:
    """Order the loads of a node's free GPUs unless a current placement is priced (the migration
    term tells GPUs of a node apart)."""
    return program.current is None


def order_within_nodes(program: LayerProgram, x: np.ndarray, free: list[int] | None = None) -> np.ndarray:
    """Permute a placement's free GPUs within each node so their loads descend (the `order_`
    rows); fixed GPUs keep their columns."""
    if not symmetry_breaking(program):
        return x
    loads = np.asarray(program.loads, dtype=float)
    per_gpu = (loads / x.sum(axis=1)) @ x
    free = list(range(program.n_gpus)) if free is None else sorted(free)
    columns = list(range(program.n_gpus))
    for n in range(program.n_nodes):
        gpus = [g for g in free if g // program.gpus_per_node == n]
        ranked = sorted(gpus, key=lambda g: (-per_gpu[g], g))
        for slot, g in zip(gpus, ranked):
            columns[slot] = g
    return x[:, columns]


def set_start(program: LayerProgram, variables: dict, x: np.ndarray) -> None:
    """Set every variable to the placement with replicas per GPU `x` (the MIP start)."""
    loads = np.asarray(program.loads, dtype=float)
    r = x.sum(axis=1)
    for (e, k), var in variables["z"].items():
        var.setInitialValue(1 if r[e] == k else 0)
    for (e, k, g), var in variables["u"].items():
        var.setInitialValue(int(x[e, g]) if r[e] == k else 0)
    norm = loads * program.n_gpus / loads.sum() if loads.sum() > 0 else np.zeros(len(loads))
    variables["peak"].setInitialValue(float(((norm / r) @ x).max()))
    per_node = program.gpus_per_node
    for (e, n), var in variables["holds"].items():
        var.setInitialValue(1 if x[e, n * per_node:(n + 1) * per_node].sum() > 0 else 0)
    if variables["moved"]:
        current = counts_matrix(program.current, len(loads), program.n_gpus)
        for (e, g), var in variables["moved"].items():
            var.setInitialValue(max(int(x[e, g]) - int(current[e, g]), 0))


def read_solution(program: LayerProgram, variables: dict) -> np.ndarray | None:
    """Replicas per GPU [n_logical, n_gpus] of the solver's solution, None if it is no placement."""
    x = variables["x_fixed"].copy()
    for (e, k, g), var in variables["u"].items():
        if var.varValue is None:
            return None
        x[e, g] += int(round(var.varValue))
    if (x.sum(axis=0) != program.slots_per_gpu).any() or (x.sum(axis=1) < 1).any():
        return None
    return x
