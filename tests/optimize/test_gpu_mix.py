"""GPU mix program: hand-computable optima, binding availability and budget, infeasibility."""

import pandas as pd
import pytest

from simcluster.optimize.gpu_mix import GpuMixInputError, solve_gpu_mix


def _row(option, gpu, price, role, bucket, capacity, gpus=1):
    return dict(option=option, gpu=gpu, gpus_per_instance=gpus, usd_per_hour=price, role=role,
                bucket=bucket, capacity_rps=capacity)


# A100 is cheaper per short request (2/10 < 4/15 USD per rps-hour), H100 per long one (4/3 < 2/1).
TABLE = [
    _row("a100", "A100", 2.0, "aggregated", "short", 10.0),
    _row("a100", "A100", 2.0, "aggregated", "long", 1.0),
    _row("h100", "H100", 4.0, "aggregated", "short", 15.0),
    _row("h100", "H100", 4.0, "aggregated", "long", 3.0),
]


def test_each_bucket_goes_to_the_gpu_cheapest_for_it():
    result = solve_gpu_mix(TABLE, {"short": 100.0, "long": 9.0})
    assert result.status == "optimal" and result.gap == pytest.approx(0.0, abs=1e-9)
    # 100/10 = 10 A100 instances for short, 9/3 = 3 H100 for long: 10*2 + 3*4 = 32 USD/hour.
    assert result.counts == {"a100": 10, "h100": 3}
    assert result.objective_usd_per_hour == pytest.approx(32.0)
    assert result.gpus_per_type == {"A100": 10, "H100": 3}
    shares = {(a["bucket"], a["option"]): a["share"] for a in result.assignment}
    assert shares == {("short", "a100"): pytest.approx(1.0), ("long", "h100"): pytest.approx(1.0)}


def test_instances_are_shared_across_buckets():
    # 5 short rps use half of one A100 instance, 0.5 long rps the other half: one instance.
    result = solve_gpu_mix(TABLE[:2], {"short": 5.0, "long": 0.5})
    assert result.counts == {"a100": 1}


def test_binding_availability_moves_demand_to_the_dearer_gpu():
    # Only 6 A100s: 60 short rps on them, the other 40 on H100 (40/15 = 2.67 instances), the
    # long 9 rps on H100 (3 instances): H100 needs ceil(2.67 + 3) = 6 instances.
    result = solve_gpu_mix(TABLE, {"short": 100.0, "long": 9.0}, gpus_available={"A100": 6})
    assert result.status == "optimal"
    assert result.counts == {"a100": 6, "h100": 6}
    assert result.objective_usd_per_hour == pytest.approx(6 * 2.0 + 6 * 4.0)


def test_budget_maximises_served_rate_then_cost():
    # 14 USD/hour: short requests are the cheapest per rps (0.2 USD/hour each on A100), so 7
    # A100 instances serve 70 short rps; long ones would cost 1.33 USD/hour per rps.
    result = solve_gpu_mix(TABLE, {"short": 100.0, "long": 9.0}, budget_usd_per_hour=14.0)
    assert result.status == "optimal"
    assert result.served_rps == pytest.approx(70.0)
    assert result.counts == {"a100": 7, "h100": 0}
    # A budget above need serves everything at the minimum cost.
    rich = solve_gpu_mix(TABLE, {"short": 100.0, "long": 9.0}, budget_usd_per_hour=1000.0)
    assert rich.served_rps == pytest.approx(109.0) and rich.objective_usd_per_hour == pytest.approx(32.0)


def test_disaggregated_needs_prefill_and_decode():
    table = [
        _row("p", "H100", 4.0, "prefill", "long", 4.0),
        _row("d", "H200", 5.0, "decode", "long", 2.0),
        _row("agg", "H100", 4.0, "aggregated", "long", 1.0),
    ]
    # P/D: 8/4 = 2 prefill + 8/2 = 4 decode = 8 + 20 = 28 USD/hour; aggregated: 8 * 4 = 32.
    result = solve_gpu_mix(table, {"long": 8.0})
    assert result.counts == {"p": 2, "d": 4, "agg": 0}
    assert result.objective_usd_per_hour == pytest.approx(28.0)
    roles = {a["role"]: a["share"] for a in result.assignment}
    assert roles == {"prefill": pytest.approx(1.0), "decode": pytest.approx(1.0)}


def test_infeasible_names_the_short_resource(tmp_path):
    lp = tmp_path / "mix.lp"
    result = solve_gpu_mix(TABLE, {"short": 100.0, "long": 9.0},
                           gpus_available={"A100": 5, "H100": 2}, lp_path=str(lp))
    assert result.status == "infeasible"
    assert any(r.startswith("available_") for r in result.infeasible_constraints)
    assert "available_H100" in lp.read_text() and "serve_short" in lp.read_text()


def test_infeasible_when_no_option_serves_a_bucket():
    result = solve_gpu_mix(TABLE, {"short": 1.0, "huge": 1.0})
    assert result.status == "infeasible"
    assert result.infeasible_constraints == ["serve_huge: no option serves bucket 'huge'"]


def test_dataframe_input_and_bad_rows():
    result = solve_gpu_mix(pd.DataFrame(TABLE), {"short": 10.0})
    assert result.counts["a100"] == 1
    bad = TABLE + [_row("x", "L4", 1.0, "training", "short", 1.0)]
    with pytest.raises(GpuMixInputError, match="row 5, column 'role'"):
        solve_gpu_mix(bad, {"short": 1.0}, source="mix.csv")
    with pytest.raises(GpuMixInputError, match="row 1: missing column 'capacity_rps'"):
        solve_gpu_mix([{k: v for k, v in TABLE[0].items() if k != "capacity_rps"}], {"short": 1.0})
    with pytest.raises(GpuMixInputError, match="bucket 'short'"):
        solve_gpu_mix(TABLE, {"short": -1.0})


def test_ids_that_clash_in_program_names_are_refused():
    table = [_row("a-1", "A100", 1.0, "aggregated", "short", 1.0),
             _row("a_1", "A100", 1.0, "aggregated", "short", 1.0)]
    with pytest.raises(GpuMixInputError, match="'a-1' and 'a_1'"):
        solve_gpu_mix(table, {"short": 1.0})


def test_cbc_finds_the_same_optimum():
    result = solve_gpu_mix(TABLE, {"short": 100.0, "long": 9.0}, solver="cbc")
    assert result.status == "optimal" and result.gap == 0.0
    assert result.counts == {"a100": 10, "h100": 3}


# The shared solver (simcluster/optimize/solver.py), exercised on programs small enough to
# check by hand.
@pytest.mark.parametrize("prefer", ["highs", "cbc"])
def test_solver_reports_status_objective_and_gap(prefer):
    import pulp

    from simcluster.optimize.solver import new_variable, solve

    prob = pulp.LpProblem("knapsack", pulp.LpMaximize)
    items = [new_variable(prob, f"x{i}", 0, 1, pulp.LpInteger) for i in range(3)]
    prob += pulp.lpSum(v * w for v, w in zip(items, (6, 5, 4))), "value"
    prob += pulp.lpSum(v * w for v, w in zip(items, (5, 4, 3))) <= 7, "weight"
    report = solve(prob, time_limit_s=10, prefer=prefer)
    assert report.status == "optimal" and report.objective == pytest.approx(9.0)  # items 1 and 2
    assert report.gap == pytest.approx(0.0, abs=1e-9) and report.solver == prefer
    assert report.solve_time_s > 0
    prob += items[0] + items[1] + items[2] >= 3, "all"
    assert solve(prob, time_limit_s=10, prefer=prefer).status == "infeasible"
