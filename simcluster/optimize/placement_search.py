"""Solving one layer's placement program: whole when small, by large-neighbourhood search after.

Programs with at most `max_assignment_vars` assignment integers are first solved whole for
80 % of the layer's time, which proves small cases optimal. Larger ones (DeepSeek-V3: 256
experts x 64 GPUs) stall at the root with a bound of 1 (the LP relaxation balances perfectly),
so the search re-solves the same program exactly over a few GPUs at a time with the others
fixed: by default the heaviest GPU and one drawn from the lighter half (pairs gave the most
improvement per second on the DeepSeek-V3 case; larger neighbourhoods take 2-3x longer per
step). A step minimises the peak of its own GPUs and is kept when the layer objective does not
rise and either it falls or the GPU loads get more even (sum of squares), so the search cannot
cycle. Every step is warm-started from the incumbent. The reported gap is against the best
valid bound known: the whole program's bound from HiGHS when it ran, else `peak_floor`.
Steps end at a 1 % gap or after `step_max_nodes` branch-and-bound nodes (a work limit, so a
step's answer does not depend on machine load; `step_time_s` only guards against a stuck step):
proving a neighbourhood optimal is slow (its LP bound is the neighbourhood's mean load) and buys
little. The number of steps a layer gets within a time limit still depends on machine speed;
pass `max_steps` (with a generous time limit) for results that do not.
"""

from __future__ import annotations

import time

import numpy as np

from simcluster.optimize.expert_layout import counts_matrix, phy2log_from_counts
from simcluster.optimize.placement_ilp import (
    LayerProgram,
    build_program,
    candidate_counts,
    objective_of,
    order_within_nodes,
    peak_floor,
    peak_over_mean,
    read_solution,
    set_start,
)
from simcluster.optimize.solver import solve

OPTIMAL_GAP = 1e-4  # relative gap under which a placement counts as proved optimal (solve's)


def solve_layer(
    program: LayerProgram,
    starts: dict[str, np.ndarray],
    time_limit_s: float,
    lp_path: str | None = None,
    solver: str | None = None,
    seed: int = 0,
    neighbourhood_gpus: int = 2,
    max_steps: int | None = None,
) -> tuple[np.ndarray, str, dict]:
    """Place one layer: the program, warm-started from the best start and capped at its peak.

    starts: named placement rows (e.g. {'eplb-hierarchical': row, 'eplb-global': row}).
    Returns (phy2log row, 'ilp' or the name of the start kept, solve record with status, gap,
    solve_time_s, method ('whole', 'neighbourhood' or 'whole+neighbourhood'), iterations).
    """
    began = time.perf_counter()
    loads = np.asarray(program.loads, dtype=float)
    n_gpus = program.n_gpus
    peak_cap = min(peak_over_mean(loads, row, n_gpus) for row in starts.values())
    eligible = {
        name: row for name, row in starts.items()
        if peak_over_mean(loads, row, n_gpus) <= peak_cap * (1 + 1e-12)
    }
    best_name = min(eligible, key=lambda name: objective_of(program, eligible[name]))
    best_row = eligible[best_name]
    if loads.sum() <= 0:
        return best_row, best_name, {"status": "optimal", "gap": 0.0, "solve_time_s": 0.0,
                                     "method": "trivial", "iterations": 0}
    counts = candidate_counts(program, list(starts.values()))
    cap = peak_cap * (1 + 1e-9) + 1e-12
    best_x = counts_matrix(best_row, len(loads), n_gpus)
    best_objective = objective_of(program, best_row)
    bound = peak_floor(program, counts)
    whole = sum(len(k) for k in counts) * n_gpus <= program.max_assignment_vars
    methods, iterations, proved = [], 0, False
    if whole or lp_path is not None:
        prob, variables = build_program(program, counts, cap)
        if lp_path is not None:
            prob.writeLP(lp_path)
    if whole:
        # Most of the time for the whole program; if it cannot prove its answer by then, the
        # neighbourhood search polishes its incumbent with the rest.
        set_start(program, variables, order_within_nodes(program, best_x))
        left_s = time_limit_s - (time.perf_counter() - began)
        report = solve(prob, time_limit_s=max(0.8 * left_s, 0.05), warm_start=True, prefer=solver)
        methods.append("whole")
        iterations += 1
        proved = report.status == "optimal"
        if report.bound is not None:
            bound = max(bound, report.bound)
        x = read_solution(program, variables) if report.objective is not None else None
        if (x is not None and peak_over_mean(loads, phy2log_from_counts(x), n_gpus) <= peak_cap
                and objective_of(program, phy2log_from_counts(x)) < best_objective - 1e-9):
            best_x, best_objective = x, objective_of(program, phy2log_from_counts(x))
    if not proved:
        best_x, steps = _neighbourhood_search(
            program, counts, cap, peak_cap, best_x, best_objective, began + time_limit_s, solver,
            seed, neighbourhood_gpus, max_steps=max_steps,
        )
        methods.append("neighbourhood")
        iterations += steps
    row = phy2log_from_counts(best_x, program.current)
    objective = objective_of(program, row)
    if objective < objective_of(program, best_row) - 1e-9:
        best_row, best_name = row, "ilp"
    else:
        objective = objective_of(program, best_row)
    # 'optimal' means what it means for HiGHS: within its relative gap tolerance of a valid bound.
    gap = max(objective - bound, 0.0) / objective
    record = {"status": "optimal" if gap <= OPTIMAL_GAP else "feasible", "gap": gap,
              "method": "+".join(methods), "iterations": iterations}
    record["solve_time_s"] = time.perf_counter() - began
    return best_row, best_name, record


def _neighbourhood_search(
    program: LayerProgram,
    counts: list[list[int]],
    cap: float,
    peak_limit: float,
    x: np.ndarray,
    objective: float,
    deadline: float,
    solver: str | None,
    seed: int,
    size: int,
    step_time_s: float = 0.5,
    step_max_nodes: int = 1000,
    max_steps: int | None = None,
    wide_every: int = 0,
    partner_fraction: float = 0.5,
) -> tuple[np.ndarray, int]:
    """Improve replicas-per-GPU `x` until `deadline` (perf_counter seconds) or `max_steps`;
    returns (x, steps). Every `wide_every`-th step (0: never) frees twice as many GPUs; partners
    of the heaviest GPU come from the lightest `partner_fraction` of GPUs."""
    rng = np.random.default_rng(seed)
    loads = np.asarray(program.loads, dtype=float)
    n_gpus = program.n_gpus
    iterations = 0
    spread = _load_spread(loads, x)
    # A step takes ~0.025 s of CPU on the DeepSeek-V3 case; stop when too little time is left.
    while deadline - time.perf_counter() > 0.1 and (max_steps is None or iterations < max_steps):
        wide = wide_every and iterations % wide_every == wide_every - 1
        size_now = min(2 * size if wide else size, n_gpus)
        per_gpu = (loads / x.sum(axis=1)) @ x
        order = np.argsort(-per_gpu, kind="stable")
        # The heaviest GPUs must shed load, the lighter ones can take it; drawing partners at
        # random from the lighter part keeps steps varied (replica counts and cross-node
        # placement change too). Lighter-half partners roughly doubled the gain per step over
        # partners from all GPUs on the DeepSeek-V3 case.
        chosen = set(order[: size_now // 2].tolist()) | set(order[::-1][: size_now // 4].tolist())
        partners = order[::-1][: max(int(partner_fraction * n_gpus), size_now)]
        others = [g for g in rng.permutation(partners).tolist() if g not in chosen]
        chosen = sorted(chosen | set(others[: size_now - len(chosen)]))
        x = order_within_nodes(program, x, chosen)
        prob, variables = build_program(
            program, counts, cap, incumbent=x, free_gpus=chosen, local_peak=True
        )
        set_start(program, variables, x)
        left_s = deadline - time.perf_counter()
        report = solve(prob, time_limit_s=max(min(left_s, step_time_s), 0.05), warm_start=True,
                       gap_rel=1e-2, prefer=solver,
                       highs_options={"mip_max_nodes": step_max_nodes})
        iterations += 1
        candidate = read_solution(program, variables) if report.objective is not None else None
        if candidate is None:
            continue
        row = phy2log_from_counts(candidate)
        # The solver's tolerances may let a peak pass the cap by ~1e-9; never-worse is exact.
        if peak_over_mean(loads, row, n_gpus) > peak_limit:
            continue
        value = objective_of(program, row)
        candidate_spread = _load_spread(loads, candidate)
        # Lexicographic descent on (objective, spread of GPU loads): the spread lets steps that
        # lower one neighbourhood's peak count as progress while another GPU sets the layer peak.
        evener = candidate_spread < spread * (1 - 1e-9)
        if value < objective - 1e-12 or (value <= objective + 1e-12 and evener):
            x, objective, spread = candidate, min(value, objective), candidate_spread
    return x, iterations


def _load_spread(loads: np.ndarray, x: np.ndarray) -> float:
    """Sum of squared GPU loads: lower means more even for a fixed total."""
    per_gpu = (loads / x.sum(axis=1)) @ x
    return float(np.square(per_gpu / max(per_gpu.mean(), 1e-300)).sum())
