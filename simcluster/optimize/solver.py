"""The one place that picks and runs a MILP solver for simcluster's integer programs.

HiGHS (through its Python API, `highspy`) is used when it is importable, else PuLP's bundled
CBC. Every solve returns a `SolveReport` so programs can be honest about what they found:
status, objective, best bound, relative gap and wall time.
"""

from __future__ import annotations

import importlib.util
import math
import time
import warnings
from dataclasses import dataclass

import pulp


@dataclass(frozen=True)
class SolveReport:
    """What one solve found.

    status: 'optimal' (proved within the gap tolerance), 'feasible' (stopped by the time limit
    with an incumbent), 'infeasible', 'unbounded', 'not_solved' (no incumbent in time).
    gap: relative gap (objective - bound) / |objective| as reported by the solver, None when the
    solver does not report one (CBC through the command line) or there is no incumbent.
    """

    status: str
    objective: float | None
    bound: float | None
    gap: float | None
    solve_time_s: float
    solver: str


def new_variable(
    problem: pulp.LpProblem,
    name: str,
    low: float | None = None,
    up: float | None = None,
    cat: str = pulp.LpContinuous,
) -> pulp.LpVariable:
    """A variable of `problem`: PuLP >= 3.3 wants variables made by their problem, older PuLP
    has only the LpVariable constructor."""
    if hasattr(problem, "add_variable"):
        return problem.add_variable(name, low, up, cat=cat)
    return pulp.LpVariable(name, low, up, cat=cat)


def highs_available() -> bool:
    """True when the HiGHS Python API can be imported."""
    return importlib.util.find_spec("highspy") is not None


def solver_name(prefer: str | None = None) -> str:
    """'highs' when highspy is importable (or asked for), else 'cbc'."""
    if prefer in ("highs", "cbc"):
        if prefer == "highs" and not highs_available():
            raise ValueError("solver 'highs' requested but highspy is not installed; use 'cbc'")
        return prefer
    if prefer is not None:
        raise ValueError(f"unknown solver {prefer!r}; expected 'highs' or 'cbc'")
    return "highs" if highs_available() else "cbc"


class _HighsWithStart(pulp.HiGHS):
    """PuLP's HiGHS interface plus a MIP start taken from the variables' current values.

    PuLP's in-process HiGHS class ignores warm starts; HiGHS itself accepts a full column
    vector as the first incumbent (`Highs.setSolution`), which is what we hand it here.
    """

    def __init__(self, *args, start: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.start = start

    def buildSolverModel(self, lp):
        """Hand the whole model to HiGHS in three array calls instead of one call per column
        and row (PuLP's loop dominates the solve time of programs with ~10^4 columns)."""
        import highspy
        import numpy as np

        inf = highspy.kHighsInf
        sense = -1.0 if lp.sense == pulp.LpMaximize else 1.0
        columns = lp.variables()
        for i, var in enumerate(columns):
            var.index = i
        costs = np.array([sense * lp.objective.get(var, 0.0) for var in columns], dtype=np.float64)
        lower = np.array([-inf if v.lowBound is None else v.lowBound for v in columns], dtype=np.float64)
        upper = np.array([inf if v.upBound is None else v.upBound for v in columns], dtype=np.float64)
        empty_i = np.zeros(0, dtype=np.int32)
        lp.solverModel.addCols(len(columns), costs, lower, upper, 0, empty_i, empty_i, np.zeros(0))
        integer = [v.index for v in columns if v.cat == pulp.LpInteger]
        if integer and self.mip:
            lp.solverModel.changeColsIntegrality(
                len(integer),
                np.array(integer, dtype=np.int32),
                np.full(len(integer), int(highspy.HighsVarType.kInteger), dtype=np.uint8),
            )
        row_lower, row_upper, starts, indices, values = [], [], [], [], []
        for i, constraint in enumerate(lp._constraints.values()):
            constraint.index = i
            starts.append(len(indices))
            for var, coefficient in constraint.items():
                if coefficient != 0:
                    indices.append(var.index)
                    values.append(coefficient)
            lb, ub = constraint.getLb(), constraint.getUb()
            row_lower.append(-inf if lb is None else lb)
            row_upper.append(inf if ub is None else ub)
        lp.solverModel.addRows(
            len(starts),
            np.array(row_lower, dtype=np.float64),
            np.array(row_upper, dtype=np.float64),
            len(indices),
            np.array(starts, dtype=np.int32),
            np.array(indices, dtype=np.int32),
            np.array(values, dtype=np.float64),
        )

    def callSolver(self, lp):
        if self.start:
            import highspy

            columns = lp.variables()
            values = [0.0] * len(columns)
            for var in columns:
                if var.varValue is not None:
                    values[var.index] = float(var.varValue)
            solution = highspy.HighsSolution()
            solution.col_value = values
            solution.value_valid = True
            lp.solverModel.setSolution(solution)
        super().callSolver(lp)


def solve(
    problem: pulp.LpProblem,
    time_limit_s: float | None = None,
    warm_start: bool = False,
    threads: int | None = 1,
    gap_rel: float | None = 1e-4,
    prefer: str | None = None,
    highs_options: dict | None = None,
) -> SolveReport:
    """Solve `problem` in place and report what was found.

    time_limit_s: wall-clock limit handed to the solver (None: no limit).
    warm_start: use the variables' current `varValue`s as the first incumbent (all of them must
    be set to a feasible point for the start to be useful).
    threads: solver threads (1 keeps process pools from oversubscribing cores; HiGHS cannot
    change its thread count within one process once it has solved something).
    highs_options: extra HiGHS options by name (ignored by CBC).
    """
    name = solver_name(prefer)
    started = time.perf_counter()
    if name == "highs":
        cmd = _HighsWithStart(
            msg=False, timeLimit=time_limit_s, threads=threads, gapRel=gap_rel, start=warm_start,
            **(highs_options or {}),
        )
    else:
        with warnings.catch_warnings():
            # PuLP >= 3.3 flags its bundled CBC as going away in 4.0; it is still the fallback
            # the design names, and the warning would repeat on every solve.
            warnings.simplefilter("ignore", DeprecationWarning)
            cmd = pulp.PULP_CBC_CMD(
                msg=False, timeLimit=time_limit_s, threads=threads, gapRel=gap_rel,
                warmStart=warm_start,
            )
    problem.solve(cmd)
    elapsed_s = time.perf_counter() - started
    objective = pulp.value(problem.objective)
    bound, gap = None, None
    status = _status_word(problem)
    if name == "highs" and getattr(problem, "solverModel", None) is not None:
        info = problem.solverModel.getInfo()
        model_status = problem.solverModel.getModelStatus()
        import highspy

        if model_status == highspy.HighsModelStatus.kTimeLimit:
            status = "feasible" if status == "optimal" else status
        if problem.isMIP() and math.isfinite(info.mip_dual_bound) and objective is not None:
            # HiGHS saw the objective without PuLP's constant, negated when maximising.
            sense = -1.0 if problem.sense == pulp.LpMaximize else 1.0
            bound = sense * float(info.mip_dual_bound) + problem.objective.constant
            gap = abs(objective - bound) / max(abs(objective), 1e-12)
        elif status == "optimal":
            bound, gap = objective, 0.0
    if status == "optimal" and gap is None and objective is not None:
        bound, gap = objective, 0.0  # proved optimal (within gap_rel) by a solver without a bound API
    if status in ("infeasible", "unbounded", "not_solved"):
        objective = None
        gap = None
    return SolveReport(status, objective, bound, gap, elapsed_s, name)


def _status_word(problem: pulp.LpProblem) -> str:
    """Map PuLP's (status, solution status) pair onto simcluster's status words."""
    if problem.status == pulp.LpStatusInfeasible:
        return "infeasible"
    if problem.status == pulp.LpStatusUnbounded:
        return "unbounded"
    if problem.sol_status == pulp.LpSolutionOptimal:
        return "optimal"
    if problem.sol_status == pulp.LpSolutionIntegerFeasible:
        return "feasible"
    if problem.status == pulp.LpStatusOptimal:
        return "optimal"
    return "not_solved"
