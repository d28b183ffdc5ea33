"""Expert placement program: never worse than EPLB, exact on small cases, traffic and migration."""

import itertools
import json

import numpy as np
import pytest

from simcluster.optimize.eplb import eplb
from simcluster.optimize.expert_layout import balancedness, cross_node_fraction, gpu_loads
from simcluster.optimize.expert_loads import (
    LoadsFileError,
    generate_loads,
    generate_source_fractions,
    read_loads_csv,
    write_loads_csv,
)
from simcluster.optimize.placement import PlacementInputError, place_experts


def _eplb_balance(loads, n_physical, n_nodes, gpus_per_node, n_groups, policy):
    rows = eplb(loads, n_physical, n_nodes, gpus_per_node, n_groups, policy)
    n_gpus = n_nodes * gpus_per_node
    return np.array([balancedness(gpu_loads(l, r, n_gpus)) for l, r in zip(loads, rows)])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_ilp_never_less_balanced_than_either_eplb_policy(seed):
    loads = generate_loads(3, 16, 20000, skew=0.9, seed=seed)
    result = place_experts(loads, 2, 2, 24, n_groups=4, policy="ilp", time_limit_s=1.5)
    ilp = np.array([r["balancedness"] for r in result.layers])
    for policy in ("hierarchical", "global"):
        assert (ilp >= _eplb_balance(loads, 24, 2, 2, 4, policy) - 1e-12).all()
    assert all(r["policy_used"] in ("ilp", "eplb-global", "eplb-hierarchical") for r in result.layers)


def test_ilp_strictly_better_when_greedy_replica_counts_pack_badly():
    # EPLB replicates expert 0 (first of the two heaviest): replicas 1.5, 1.5, 3, 2 on two GPUs
    # with two slots each pack at best to a 4.5 peak (mean 4). Replicating expert 2 instead
    # gives 3+1 | 3+1: perfectly balanced, which only a program choosing counts can find.
    loads = np.array([[3.0, 3.0, 2.0]])
    greedy = _eplb_balance(loads, 4, 1, 2, None, "global")
    assert greedy[0] == pytest.approx(4 / 4.5)
    result = place_experts(loads, 1, 2, 4, policy="ilp", time_limit_s=5.0)
    assert result.layers[0]["balancedness"] == pytest.approx(1.0)
    assert result.layers[0]["policy_used"] == "ilp"
    assert result.layers[0]["status"] == "optimal"
    assert result.logcnt[0].tolist() == [1, 1, 2]


def test_whole_program_matches_brute_force_optimum():
    rng = np.random.default_rng(5)
    for _ in range(3):
        loads = rng.integers(1, 50, size=(1, 4)).astype(float)
        best = 0.0
        for row in itertools.product(range(4), repeat=6):  # 3 GPUs x 2 slots
            row = np.array(row)
            if len(set(row.tolist())) == 4:
                best = max(best, balancedness(gpu_loads(loads[0], row, 3)))
        result = place_experts(loads, 1, 3, 6, policy="ilp", time_limit_s=5.0,
                               cross_node_weight=0.0, count_window=3)
        assert result.layers[0]["status"] == "optimal"
        assert result.layers[0]["balancedness"] == pytest.approx(best, rel=1e-6)


def test_cross_node_weight_cuts_traffic_below_eplb_global():
    loads = generate_loads(2, 16, 20000, skew=0.6, seed=4)
    sources = generate_source_fractions(2, 16, 2, locality=1.0, seed=4)
    result = place_experts(loads, 2, 2, 24, policy="ilp", time_limit_s=8.0,
                           source_fractions=sources, cross_node_weight=0.5)
    glob = eplb(loads, 24, 2, 2, None, "global")
    for layer in range(2):
        baseline = cross_node_fraction(loads[layer], glob[layer], 2, 2, sources[layer])
        assert result.layers[layer]["cross_node_fraction"] < baseline - 0.05
        assert result.layers[layer]["balancedness"] >= balancedness(
            gpu_loads(loads[layer], glob[layer], 4)) - 1e-12


def test_uniform_sources_expert_on_every_node_costs_no_traffic():
    loads = np.array([10.0, 1.0])
    row = np.array([0, 1, 0, 0])  # 2 nodes x 1 GPU x 2 slots: expert 0 on both nodes
    assert cross_node_fraction(loads, row, 2, 1) == pytest.approx(1.0 * 0.5 / 11.0)


def test_migration_weight_keeps_placement_when_loads_unchanged():
    # Small enough that the first solve proves optimality (typically ~1 s; the limit only
    # guards a loaded machine).
    loads = generate_loads(2, 6, 5000, skew=0.8, seed=1)
    first = place_experts(loads, 2, 2, 8, n_groups=2, time_limit_s=8.0, cross_node_weight=0.0)
    assert all(r["status"] == "optimal" for r in first.layers)
    again = place_experts(loads, 2, 2, 8, n_groups=2, time_limit_s=8.0, cross_node_weight=0.0,
                          current=first.phy2log)
    np.testing.assert_array_equal(again.phy2log, first.phy2log)
    assert [r["migrated_slots"] for r in again.layers] == [0, 0]


def test_migration_term_prices_moves():
    loads = generate_loads(1, 12, 5000, skew=0.8, seed=9)
    # Start from a poor placement (identity-ish layout): without a migration weight the program
    # rebalances freely; with a heavy weight it moves fewer replicas.
    current = np.array([np.r_[np.arange(12), np.arange(4)]])
    free = place_experts(loads, 2, 2, 16, time_limit_s=2.0, current=current, migration_weight=0.0,
                         cross_node_weight=0.0)
    held = place_experts(loads, 2, 2, 16, time_limit_s=2.0, current=current, migration_weight=5.0,
                         cross_node_weight=0.0)
    assert held.layers[0]["migrated_slots"] < free.layers[0]["migrated_slots"]


def test_records_report_solver_status_gap_and_time(tmp_path):
    loads = generate_loads(2, 8, 4000, skew=0.8, seed=1)
    result = place_experts(loads, 2, 2, 12, n_groups=2, time_limit_s=1.5, lp_dir=str(tmp_path))
    for record in result.layers:
        assert record["status"] in ("optimal", "feasible")
        assert record["gap"] is not None and 0 <= record["gap"] <= 1
        assert record["solve_time_s"] > 0
        assert record["mean_gpu_load"] == pytest.approx(loads[record["layer"]].sum() / 4)
    lp = (tmp_path / "layer_0.lp").read_text()
    assert "slots_0:" in lp and "load_3:" in lp and "replicas_0_" in lp
    payload = json.loads(json.dumps(result.to_json_dict()))
    assert payload["n_physical"] == 12 and len(payload["layers"]) == 2
    assert np.array(payload["gpu_loads"]).shape == (2, 4)


def test_neighbourhood_search_path_and_process_pool():
    loads = generate_loads(2, 32, 40000, skew=0.7, seed=2)
    result = place_experts(loads, 2, 4, 48, n_groups=4, time_limit_s=4.0, workers=2,
                           max_assignment_vars=100)
    glob = _eplb_balance(loads, 48, 2, 4, 4, "global")
    assert all(r["method"] == "neighbourhood" for r in result.layers)
    assert all(r["iterations"] >= 1 for r in result.layers)
    assert (np.array([r["balancedness"] for r in result.layers]) >= glob - 1e-12).all()
    assert (result.logcnt >= 1).all()
    # Splitting loads over replicas conserves tokens: GPU loads add up to the layer's tokens.
    np.testing.assert_allclose(result.gpu_loads.sum(axis=1), loads.sum(axis=1))


@pytest.mark.parametrize("policy", ["eplb-hierarchical", "eplb-global"])
def test_greedy_policies_pass_through(policy):
    loads = generate_loads(2, 16, 1000, seed=0)
    result = place_experts(loads, 2, 2, 24, n_groups=4, policy=policy)
    expected = eplb(loads, 24, 2, 2, 4, policy.split("-")[1])
    np.testing.assert_array_equal(result.phy2log, expected)
    assert {r["policy_used"] for r in result.layers} == {policy}


def test_bad_arguments_raise_one_line_errors():
    loads = np.ones((1, 8))
    for kwargs in (dict(n_physical=10), dict(n_physical=12, policy="best"),
                   dict(n_physical=12, policy="eplb-hierarchical", n_groups=3)):
        kwargs = {"n_nodes": 2, "gpus_per_node": 2, **kwargs}
        with pytest.raises(PlacementInputError) as err:
            place_experts(loads, **kwargs)
        assert "\n" not in str(err.value)


def test_read_loads_csv_with_and_without_header(tmp_path):
    loads = generate_loads(3, 5, 100, seed=1)
    path = tmp_path / "loads.csv"
    write_loads_csv(path, loads)
    np.testing.assert_array_equal(read_loads_csv(path), loads)
    bare = tmp_path / "bare.csv"
    bare.write_text("1,2,3\n4,5,6\n")
    np.testing.assert_array_equal(read_loads_csv(bare), [[1, 2, 3], [4, 5, 6]])


@pytest.mark.parametrize("text, where", [
    ("a,b,c\n1,2,3\n4,x,6\n", "row 3, column 2"),
    ("1,2,3\n4,5\n", "row 2 has 2 columns"),
    ("1,2,-3\n", "row 1, column 3"),
    ("a,b\n", "no data rows"),
])
def test_read_loads_csv_errors_name_row_and_column(tmp_path, text, where):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(LoadsFileError) as err:
        read_loads_csv(path)
    assert where in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_generate_loads_is_deterministic_and_skewed():
    a = generate_loads(4, 256, 100000, skew=0.5, seed=3)
    np.testing.assert_array_equal(a, generate_loads(4, 256, 100000, skew=0.5, seed=3))
    assert (a.sum(axis=1) == 100000).all()
    hot = (a.max(axis=1) / a.mean(axis=1)).mean()
    flat = generate_loads(4, 256, 100000, skew=0.0, seed=3)
    assert hot > 4 and (flat.max(axis=1) / flat.mean(axis=1)).mean() < 2.5


@pytest.mark.slow
def test_deepseek_v3_scale_within_budget():
    # 58 MoE layers x 256 experts on 8 nodes x 8 GPUs; 320 slots (288 would be 4.5 per GPU).
    loads = generate_loads(58, 256, 58 * 4096, skew=0.5, seed=0)
    # The budget is 60 s on 2 cores: give the solver 55 s and hold the whole call to 60 s.
    result = place_experts(loads, 8, 8, 320, n_groups=8, time_limit_s=55.0, workers=2)
    assert result.total_time_s < 60.0
    glob = _eplb_balance(loads, 320, 8, 8, 8, "global")
    ilp = np.array([r["balancedness"] for r in result.layers])
    assert (ilp >= glob - 1e-12).all() and ilp.mean() > glob.mean()
    assert all(r["gap"] is not None for r in result.layers)


def test_step_capped_search_is_reproducible():
    loads = generate_loads(1, 32, 40000, skew=0.7, seed=6)
    runs = [place_experts(loads, 2, 4, 48, time_limit_s=60.0, max_assignment_vars=100,
                          max_steps_per_layer=12) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].phy2log, runs[1].phy2log)
    assert runs[0].layers[0]["iterations"] == 12


def test_time_limit_per_layer():
    loads = generate_loads(2, 32, 40000, skew=0.7, seed=6)
    result = place_experts(loads, 2, 4, 48, time_limit_s=100.0, time_limit_per_layer_s=0.5,
                           max_assignment_vars=100)
    assert result.total_time_s < 3.0
    assert all(r["solve_time_s"] < 1.0 for r in result.layers)


def test_cbc_fallback_solves_the_adversarial_case():
    result = place_experts(np.array([[3.0, 3.0, 2.0]]), 1, 2, 4, time_limit_s=5.0, solver="cbc")
    assert result.layers[0]["balancedness"] == pytest.approx(1.0)
    assert result.layers[0]["status"] == "optimal"
