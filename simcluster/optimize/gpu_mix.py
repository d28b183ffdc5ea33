"""The GPU mix program: how many instances of each serving option to rent for a demand mix.

Inputs are a capacity table (one row per option and request-length bucket: the requests/s of
that bucket one instance serves within the SLO, measured or simulated elsewhere), demand per
bucket, GPUs available per type and optionally a budget. Variables (PuLP MILP):

    n[o] >= 0 integer                 instances of option o
    f[o,b] >= 0                       share of bucket b's demand served by option o
    sum_b f[o,b] * D_b / C[o,b] <= n[o]                     capacity_<o>   (time-sharing)
    sum_{o aggregated or prefill} f[o,b] = 1 (<= 1 w/ budget)  serve_<b>
    sum_{o decode} f[o,b] = sum_{o prefill} f[o,b]             decode_<b>   (P/D pairs)
    sum_{o on gpu t} gpus_per_instance[o] * n[o] <= A_t         available_<t>
    sum_o usd_per_hour[o] * n[o] <= budget                      budget

An instance's capacity is shared across buckets in proportion to the time each request takes
(sum of load/capacity <= instances). Disaggregated serving covers a bucket only when the same
share of it has both prefill and decode capacity. Objective: minimise USD/hour; with a budget,
maximise served requests/s, then minimise USD/hour at that rate.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pulp

from simcluster.optimize.solver import new_variable, solve

ROLES = ("aggregated", "prefill", "decode")
COLUMNS = ("option", "gpu", "gpus_per_instance", "usd_per_hour", "role", "bucket", "capacity_rps")


class GpuMixInputError(ValueError):
    """A capacity table, demand or availability entry that cannot be used; one line naming it."""


@dataclass
class MixResult:
    """What the GPU mix program found.

    status: 'optimal', 'feasible' (time limit, with gap), 'infeasible' or 'not_solved'.
    infeasible_constraints: for an infeasible program, the constraints that would have to be
    relaxed (found by re-solving with penalised slack on demand, availability and budget).
    assignment: flat records {bucket, option, role, gpu, share, rate_rps}.
    """

    status: str
    objective_usd_per_hour: float | None
    served_rps: float | None
    gap: float | None
    solve_time_s: float
    counts: dict[str, int] = field(default_factory=dict)
    assignment: list[dict] = field(default_factory=list)
    gpus_per_type: dict[str, int] = field(default_factory=dict)
    infeasible_constraints: list[str] = field(default_factory=list)
    lp_path: str | None = None


@dataclass(frozen=True)
class _Option:
    name: str
    gpu: str
    gpus_per_instance: int
    usd_per_hour: float
    role: str
    capacity_rps: dict  # bucket -> requests/s per instance


def solve_gpu_mix(
    capacity_table,
    demand_rps: dict[str, float],
    gpus_available: dict[str, int] | None = None,
    budget_usd_per_hour: float | None = None,
    time_limit_s: float = 30.0,
    lp_path: str | None = None,
    solver: str | None = None,
    source: str = "capacity table",
) -> MixResult:
    """Choose instance counts per option and split each bucket's demand among options.

    capacity_table: records (list of dicts) or a pandas DataFrame with columns option, gpu,
      gpus_per_instance, usd_per_hour (per instance), role ('aggregated'|'prefill'|'decode'),
      bucket, capacity_rps (requests/s of that bucket one instance serves under the SLO).
    demand_rps: requests/s per bucket. gpus_available: max GPUs per type (absent: unlimited).
    budget_usd_per_hour: when given, maximise served requests/s within it instead.
    lp_path: write the program there (an infeasible one too, so it can be read).
    source: name used in input error messages (e.g. the file the table came from).

    >>> table = [dict(option="a", gpu="H100", gpus_per_instance=1, usd_per_hour=2.0,
    ...               role="aggregated", bucket="short", capacity_rps=10.0)]
    >>> solve_gpu_mix(table, {"short": 25.0}).counts
    {'a': 3}
    """
    options = _read_table(capacity_table, source)
    demand = _check_demand(demand_rps, source)
    available = dict(gpus_available or {})
    for gpu, count in available.items():
        if count < 0:
            raise GpuMixInputError(f"gpus_available: {gpu} = {count}; expected a count >= 0")
    prob, n, f, served = _build(options, demand, available, budget_usd_per_hour, elastic=False)
    if lp_path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(lp_path)), exist_ok=True)
        prob.writeLP(lp_path)
    report = solve(prob, time_limit_s=time_limit_s, prefer=solver, gap_rel=1e-6)
    total_time_s = report.solve_time_s
    if report.status in ("infeasible", "not_solved"):
        reasons = _diagnose(options, demand, available, budget_usd_per_hour, time_limit_s, solver)
        return MixResult(report.status, None, None, None, total_time_s,
                         infeasible_constraints=reasons, lp_path=lp_path)
    if budget_usd_per_hour is not None and report.objective is not None:
        # Second stage: cheapest mix that still serves the best rate found.
        best_rate = pulp.value(served)
        prob2, n, f, served = _build(options, demand, available, budget_usd_per_hour, elastic=False,
                                     min_served_rps=best_rate * (1 - 1e-9) - 1e-9)
        report2 = solve(prob2, time_limit_s=time_limit_s, prefer=solver, gap_rel=1e-6)
        total_time_s += report2.solve_time_s
        if report2.objective is not None:
            report = report2
    return _result(report, options, demand, n, f, served, total_time_s, lp_path)


def _build(options, demand, available, budget, elastic, min_served_rps=None):
    """The program; elastic=True adds penalised slack to demand, availability and budget rows."""
    prob = pulp.LpProblem("gpu_mix", pulp.LpMinimize)
    n = {o.name: new_variable(prob, f"n_{_safe(o.name)}", low=0, cat=pulp.LpInteger) for o in options}
    f = {
        (o.name, b): new_variable(prob, f"f_{_safe(o.name)}_{_safe(b)}", low=0, up=1)
        for o in options for b in o.capacity_rps if b in demand
    }
    slack = {}
    cost = pulp.lpSum(o.usd_per_hour * n[o.name] for o in options)
    for o in options:
        prob += (
            pulp.lpSum(f[o.name, b] * (demand[b] / o.capacity_rps[b])
                       for b in o.capacity_rps if b in demand) - n[o.name] <= 0,
            f"capacity_{_safe(o.name)}",
        )
    served_terms = []
    for b, rate in demand.items():
        front = [f[o.name, b] for o in options if (o.name, b) in f and o.role != "decode"]
        prefill = [f[o.name, b] for o in options if (o.name, b) in f and o.role == "prefill"]
        decode = [f[o.name, b] for o in options if (o.name, b) in f and o.role == "decode"]
        if elastic:
            slack[f"serve_{b}"] = new_variable(prob, f"slack_serve_{_safe(b)}", low=0)
            prob += pulp.lpSum(front) + slack[f"serve_{b}"] == 1, f"serve_{_safe(b)}"
        elif budget is not None:
            prob += pulp.lpSum(front) <= 1, f"serve_{_safe(b)}"
        else:
            prob += pulp.lpSum(front) == 1, f"serve_{_safe(b)}"
        prob += pulp.lpSum(decode) - pulp.lpSum(prefill) == 0, f"decode_{_safe(b)}"
        served_terms.append(rate * pulp.lpSum(front))
    served = pulp.lpSum(served_terms)
    for gpu, limit in available.items():
        used = pulp.lpSum(o.gpus_per_instance * n[o.name] for o in options if o.gpu == gpu)
        if elastic:
            slack[f"available_{gpu}"] = new_variable(prob, f"slack_available_{_safe(gpu)}", low=0)
            used = used - slack[f"available_{gpu}"]
        prob += used <= limit, f"available_{_safe(gpu)}"
    if budget is not None:
        spend = cost
        if elastic:
            slack["budget"] = new_variable(prob, "slack_budget", low=0)
            spend = cost - slack["budget"]
        prob += spend <= budget, "budget"
    if min_served_rps is not None:
        prob += served >= min_served_rps, "served_at_least"
    if elastic:
        # Unserved demand is priced far above extra GPUs, extra GPUs far above extra budget, so the
        # diagnosis names the resource that is short before it blames the demand.
        prob += pulp.lpSum(
            var * (1e6 * demand[name[len("serve_"):]] if name.startswith("serve_")
                   else 1e3 if name.startswith("available_") else 1.0)
            for name, var in slack.items()
        ) + cost * 1e-6
        return prob, n, f, slack
    if budget is not None and min_served_rps is None:
        prob.sense = pulp.LpMaximize
        prob += served
    else:
        prob += cost
    return prob, n, f, served


def _diagnose(options, demand, available, budget, time_limit_s, solver) -> list[str]:
    """Name the constraints an infeasible program must relax, from the elastic program's slack."""
    reasons = [f"serve_{b}: no option serves bucket {b!r}" for b in demand
               if not any(b in o.capacity_rps for o in options if o.role != "decode")]
    reasons += [f"decode_{b}: bucket {b!r} has prefill but no decode option" for b in demand
                if any(b in o.capacity_rps for o in options if o.role == "prefill")
                and not any(b in o.capacity_rps for o in options if o.role == "decode")
                and not any(b in o.capacity_rps for o in options if o.role == "aggregated")]
    if reasons:
        return reasons
    prob, n, f, slack = _build(options, demand, available, budget, elastic=True)
    solve(prob, time_limit_s=time_limit_s, prefer=solver)
    for name, var in slack.items():
        value = var.varValue or 0.0
        if value > 1e-7:
            if name.startswith("available_"):
                gpu = name[len("available_"):]
                reasons.append(f"{name}: needs {available[gpu] + value:.0f} {gpu} GPUs,"
                               f" {available[gpu]} available")
            elif name == "budget":
                reasons.append(f"budget: needs {budget + value:.2f} USD/hour, budget {budget:.2f}")
            else:
                reasons.append(f"{name}: {value:.1%} of the demand cannot be served")
    return reasons or ["program infeasible; read the LP file (lp_path) for details"]


def _result(report, options, demand, n, f, served, total_time_s, lp_path) -> MixResult:
    counts = {o.name: int(round(n[o.name].varValue or 0)) for o in options}
    by_name = {o.name: o for o in options}
    assignment = []
    for (name, b), var in sorted(f.items()):
        share = var.varValue or 0.0
        if share > 1e-9:
            o = by_name[name]
            assignment.append({"bucket": b, "option": name, "role": o.role, "gpu": o.gpu,
                               "share": share, "rate_rps": share * demand[b]})
    gpus = {}
    for o in options:
        if counts[o.name]:
            gpus[o.gpu] = gpus.get(o.gpu, 0) + counts[o.name] * o.gpus_per_instance
    cost = sum(o.usd_per_hour * counts[o.name] for o in options)
    return MixResult(
        status=report.status,
        objective_usd_per_hour=cost,
        served_rps=float(pulp.value(served)),
        gap=report.gap,
        solve_time_s=total_time_s,
        counts=counts,
        assignment=assignment,
        gpus_per_type=gpus,
        lp_path=lp_path,
    )


def _read_table(table, source: str) -> list[_Option]:
    records = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    if not records:
        raise GpuMixInputError(f"{source}: no rows; expected one row per option and bucket")
    options: dict[str, dict] = {}
    for i, row in enumerate(records, start=1):
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise GpuMixInputError(f"{source}: row {i}: missing column {missing[0]!r}")
        try:
            gpus = int(row["gpus_per_instance"])
            price = float(row["usd_per_hour"])
            capacity = float(row["capacity_rps"])
        except (TypeError, ValueError):
            raise GpuMixInputError(
                f"{source}: row {i}: gpus_per_instance, usd_per_hour and capacity_rps must be numbers"
            ) from None
        if gpus < 1 or price < 0 or capacity <= 0:
            raise GpuMixInputError(
                f"{source}: row {i}: expected gpus_per_instance >= 1, usd_per_hour >= 0,"
                f" capacity_rps > 0; got {gpus}, {price}, {capacity}"
            )
        if row["role"] not in ROLES:
            raise GpuMixInputError(f"{source}: row {i}, column 'role': {row['role']!r}; expected one of {ROLES}")
        name = str(row["option"])
        fixed = (str(row["gpu"]), gpus, price, row["role"])
        entry = options.setdefault(name, {"fixed": fixed, "capacity": {}})
        if entry["fixed"] != fixed:
            raise GpuMixInputError(
                f"{source}: row {i}: option {name!r} has gpu/gpus_per_instance/usd_per_hour/role"
                " different from its earlier rows"
            )
        bucket = str(row["bucket"])
        if bucket in entry["capacity"]:
            raise GpuMixInputError(f"{source}: row {i}: option {name!r} repeats bucket {bucket!r}")
        entry["capacity"][bucket] = capacity
    result = [_Option(name, *e["fixed"], e["capacity"]) for name, e in options.items()]
    # Program names keep only letters and digits; two ids that differ only elsewhere would clash.
    for kind, names in (("option", [o.name for o in result]),
                        ("bucket", sorted({b for o in result for b in o.capacity_rps})),
                        ("gpu", sorted({o.gpu for o in result}))):
        seen = {}
        for name in names:
            other = seen.setdefault(_safe(name), name)
            if other != name:
                raise GpuMixInputError(
                    f"{source}: {kind} ids {other!r} and {name!r} differ only in punctuation"
                )
    return result


def _check_demand(demand_rps: dict, source: str) -> dict[str, float]:
    demand = {}
    for bucket, rate in demand_rps.items():
        if not isinstance(rate, (int, float)) or rate < 0:
            raise GpuMixInputError(f"demand_rps: bucket {bucket!r} = {rate!r}; expected requests/s >= 0")
        if rate > 0:
            demand[str(bucket)] = float(rate)
    return demand


def _safe(name: str) -> str:
    """PuLP names may not hold spaces or operators."""
    return "".join(c if c.isalnum() else "_" for c in str(name))
