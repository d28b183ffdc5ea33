"""Serving plan search: bounds against simulation, capacity bisection, pruning reasons, branch and
bound soundness, objectives, cache, and `simcluster plan` end to end on a small scenario."""

import json
import math

import numpy as np
import pytest

from simcluster.cli import main
from simcluster.cost import cost_model_for
from simcluster.llm.spec import load_llm
from simcluster.optimize.serving_bounds import (
    capacity_bound_rps,
    decode_step_s,
    replicas_lower_bound,
    tpot_batch_limit,
)
from simcluster.optimize.serving_capacity import ServingInputs, horizon_s, replica_capacity
from simcluster.optimize.serving_search import SearchError, ServingSpace, screen, search_serving_plans
from simcluster.optimize.sweep import SweepOptions
from simcluster.serving.step import StepTimer
from simcluster.workload import generate

SLO = {"ttft_s": 0.5, "tpot_s": 0.04, "e2e_s": None, "percentile": 90}
SERIAL = SweepOptions(workers=1)
METHOD = "roofline"   # the search logic is what is tested here; roofline models build instantly


@pytest.fixture(scope="module")
def llm():
    return load_llm("llama-3.1-8b")


@pytest.fixture(scope="module")
def trace():
    return generate({"arrival": "poisson", "rate_per_s": 6.0, "n_requests": 160,
                     "prompt_tokens": {"dist": "uniform", "min": 200, "max": 1200},
                     "output_tokens": {"dist": "uniform", "min": 20, "max": 120}}, seed=3)


def small_space(**kw):
    base = dict(gpus=("h100-sxm", "l40s"), tp=(1, 2), max_num_seqs=(128,), max_batched_tokens=(4096,),
                max_replicas=8)
    return ServingSpace(**{**base, **kw})


def test_tpot_batch_limit_is_the_edge_of_the_target(llm):
    timer = StepTimer(llm, cost_model_for("l40s", METHOD), 1)
    b = tpot_batch_limit(timer, 0.03, 800, 512)
    assert 1 <= b < 512
    assert decode_step_s(timer, b, 800) <= 0.03 < decode_step_s(timer, b + 1, 800)
    assert tpot_batch_limit(timer, 1e-6, 800, 512) == 0
    assert tpot_batch_limit(timer, None, 800, 512) == 512
    # More decode slots never lower the bound; no slot, no throughput; without decodes only the
    # token bound is left: 1 / (P · t_token) with t_token from a full prefill iteration.
    assert capacity_bound_rps(timer, 500, 100, 64, 4096) >= capacity_bound_rps(timer, 500, 100, 8, 4096)
    assert capacity_bound_rps(timer, 500, 100, 0, 4096) == 0.0
    t_token = timer.time_s(n_prefill=1, prefill_new=4096, prefill_ctx=4096) / 4096
    assert capacity_bound_rps(timer, 500, 1, 8, 4096) == pytest.approx(1 / (501 * t_token))
    assert replicas_lower_bound(10.0, 3.0) == 4 and replicas_lower_bound(9.0, 3.0) == 3
    assert replicas_lower_bound(1.0, 0.0) == math.inf


@pytest.mark.parametrize("gpu", ["a100-sxm-80gb", "l40s"])
def test_simulated_capacity_stays_below_the_analytic_bound(llm, trace, gpu):
    """The bound is what makes pruning safe: the simulator must never beat it."""
    survivors, _ = screen(llm, trace, SLO, small_space(gpus=(gpu,), tp=(1,)), trace.rate_per_s, METHOD)
    (s,) = survivors
    inputs = ServingInputs(llm, trace, SLO, METHOD, capacity_requests=120)
    cap = replica_capacity({**s, "rate_hi_rps": s["rate_hi_rps"]}, inputs)
    assert 0 < cap["capacity_rps"] <= s["rate_hi_rps"]
    assert cap["bound_reached"]               # the bound itself already misses the SLO
    # Bisection bracket: every probe at or below the capacity met the SLO, every one at or
    # above the upper end missed it, and the bracket is within the tolerance.
    for rate, met in cap["probes"]:
        if rate <= cap["capacity_rps"]:
            assert met
        if rate >= cap["capacity_hi_rps"]:
            assert not met
    assert cap["capacity_hi_rps"] - cap["capacity_rps"] <= 0.05 * cap["capacity_hi_rps"] + 1e-9


def test_horizon_is_the_latest_finish_that_can_still_meet_the_slo(trace):
    h = horizon_s(trace, SLO)
    assert h == pytest.approx(trace.arrival_s[-1] + (0.5 + 0.04 * trace.output_tokens.max()) * 1.001)
    assert horizon_s(trace, {"ttft_s": 0.5}) is None


def test_pruning_gives_a_reason_per_stage(llm, trace):
    big = load_llm("llama-3.1-70b")
    _, pruned = screen(big, trace, SLO, small_space(gpus=("l40s",), tp=(1,)), trace.rate_per_s, METHOD)
    assert pruned[0]["stage"] == "memory" and "GiB" in pruned[0]["reason"]
    _, pruned = screen(llm, trace, {**SLO, "ttft_s": 0.001}, small_space(gpus=("l40s",), tp=(1,)), trace.rate_per_s, METHOD)
    assert pruned[0]["stage"] == "unloaded SLO"
    _, pruned = screen(llm, trace, SLO, small_space(gpus=("h100-sxm",), tp=(1,), ep=(2,)), trace.rate_per_s, METHOD)
    assert pruned[0]["stage"] == "shape" and "dense" in pruned[0]["reason"]
    _, pruned = screen(llm, trace, SLO, small_space(gpus=("l40s",), tp=(1,), max_replicas=1), 1000.0, METHOD)
    assert pruned[0]["stage"] == "throughput bound"


def test_search_sizes_replicas_from_capacity_and_verifies(llm, trace):
    r = search_serving_plans(llm, trace, SLO, small_space(), sweep=SERIAL, capacity_requests=120, cost_method=METHOD)
    assert r.best is not None and r.best["meets_slo"]
    assert len(r.rows) + len(r.pruned) == r.candidates == 4
    for row in r.rows:
        assert row["replicas_from_capacity"] == math.ceil(trace.rate_per_s / row["capacity_rps"] - 1e-9)
        assert row["replicas_from_capacity"] <= row["replicas"] <= row["replicas_from_capacity"] + 2
        assert row["capacity_rps"] <= row["bound_rps"]
        assert row["usd_per_hour"] == pytest.approx(row["replicas"] * row["usd_per_hour_per_replica"])
    costs = [row["usd_per_hour"] for row in r.rows if row["meets_slo"]]
    assert costs == sorted(costs)
    # The front holds no plan another verified plan beats on cost, TTFT and TPOT at once.
    feasible = [x for x in r.rows if x["meets_slo"]]
    for f in r.front:
        assert not any(o["usd_per_hour"] <= f["usd_per_hour"] and o["ttft_s_p90"] <= f["ttft_s_p90"]
                       and o["tpot_s_p90"] <= f["tpot_s_p90"] and o is not f
                       and (o["usd_per_hour"], o["ttft_s_p90"], o["tpot_s_p90"])
                       != (f["usd_per_hour"], f["ttft_s_p90"], f["tpot_s_p90"]) for o in feasible)
    assert r.best in r.front


def test_branch_and_bound_finds_the_same_cheapest_plan_as_exhaustive_search(llm, trace):
    space = small_space(gpus=("h100-sxm", "l40s", "a100-sxm-80gb"), tp=(1, 2))
    pruned_run = search_serving_plans(llm, trace, SLO, space, sweep=SERIAL, capacity_requests=120, cost_method=METHOD,
                                      simulate_at_least=1)
    full_run = search_serving_plans(llm, trace, SLO, space, sweep=SERIAL, capacity_requests=120, cost_method=METHOD,
                                    simulate_at_least=100)
    assert any(p["stage"] == "dominated" for p in pruned_run.pruned)
    assert len(full_run.rows) > len(pruned_run.rows)
    assert pruned_run.best["usd_per_hour"] == full_run.best["usd_per_hour"]
    assert pruned_run.simulations < full_run.simulations


def test_batching_is_tuned_for_the_best_shapes_only(llm, trace):
    space = small_space(gpus=("h100-sxm", "a100-sxm-80gb", "l40s"), tp=(1,), max_num_seqs=(128, 16))
    r = search_serving_plans(llm, trace, SLO, space, sweep=SERIAL, capacity_requests=120, cost_method=METHOD,
                             simulate_at_least=3, tune_top=1)
    best_gpu = r.best["gpu"]
    simulated = {(row["gpu"], row["max_num_seqs"]) for row in r.rows}
    # Stage 1 ran the first variant (seqs128) of every shape, stage 2 the other variant of the best.
    assert {(g, 128) for g in ("h100-sxm", "a100-sxm-80gb", "l40s")} <= simulated
    assert (best_gpu, 16) in simulated or any(p["plan"].startswith(best_gpu) and "seqs16" in p["plan"]
                                              and p["stage"] == "dominated" for p in r.pruned)
    untuned = [p for p in r.pruned if p["stage"] == "not tuned"]
    assert {p["plan"].split()[0] for p in untuned} == {"h100-sxm", "a100-sxm-80gb", "l40s"} - {best_gpu}
    assert any("tune_top" in n for n in r.notes)


def test_goodput_per_usd_objective_ranks_by_requests_per_usd(llm, trace):
    r = search_serving_plans(llm, trace, SLO, small_space(), "max_goodput_per_usd", sweep=SERIAL, cost_method=METHOD,
                             capacity_requests=120, simulate_at_least=10)
    values = [row["requests_per_usd_at_capacity"] for row in r.rows if row["meets_slo"]]
    assert values == sorted(values, reverse=True) and len(values) >= 2
    with pytest.raises(SearchError, match="objective"):
        search_serving_plans(llm, trace, SLO, small_space(), "fastest")
    with pytest.raises(SearchError, match="at least one"):
        search_serving_plans(llm, trace, {"percentile": 90}, small_space())


def test_cached_search_repeats_without_simulating(llm, trace, tmp_path):
    sweep = SweepOptions(workers=1, cache_dir=str(tmp_path))
    first = search_serving_plans(llm, trace, SLO, small_space(tp=(1,)), sweep=sweep, capacity_requests=100, cost_method=METHOD)
    again = search_serving_plans(llm, trace, SLO, small_space(tp=(1,)), sweep=sweep, capacity_requests=100, cost_method=METHOD)
    assert first.simulations > 0 and again.simulations == 0 and again.cached > 0
    assert [r["usd_per_hour"] for r in again.rows] == [r["usd_per_hour"] for r in first.rows]
    assert [r["ttft_s_p90"] for r in again.rows] == pytest.approx([r["ttft_s_p90"] for r in first.rows])


def test_disaggregated_candidates_are_simulated_as_prefill_decode_units(llm, trace):
    r = search_serving_plans(llm, trace, SLO, small_space(gpus=("h100-sxm",), tp=(1,), disaggregated=(True,),
                                                          pd_ratio=("1:1",)), sweep=SERIAL, capacity_requests=100, cost_method=METHOD)
    if r.pruned and r.pruned[0]["stage"] == "unsupported":
        pytest.skip("serving simulator without prefill/decode roles")
    (row,) = r.rows
    assert row["disaggregated"] and row["pd_ratio"] == "1:1"
    assert row["gpus"] == 2 * row["replicas"]   # one prefill + one decode GPU per unit


PLAN_SCENARIO = """
name: plan-test
llm: llama-3.1-8b
cost_model: roofline
workload:
  synthetic:
    arrival: poisson
    rate_per_s: 5
    n_requests: 120
    prompt_tokens: {dist: uniform, min: 200, max: 1000}
    output_tokens: {dist: uniform, min: 20, max: 100}
slo: {ttft_s: 0.5, tpot_s: 0.04}
search:
  gpus: [h100-sxm, l40s, l4]
  tp: [1, 2]
  capacity_requests: 100
  simulate_at_least: 2
"""


def test_plan_command_writes_json_csv_and_plot(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(PLAN_SCENARIO)
    out = tmp_path / "out"
    code = main(["plan", str(path), "--json", "--workers", "1", "--out", str(out), "--objective", "min_cost"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["best"]["meets_slo"] and payload["candidates"] == 6
    assert payload["best"]["plan"] in payload["pareto_front"]
    assert len(payload["plans"]) + len(payload["pruned"]) == 6
    assert {"plan.json", "plans.csv", "pruned.csv", "pareto.png"} <= {p.name for p in out.iterdir()}
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    code = main(["plan", str(path), "--workers", "1", "--set", "slo.ttft_s=0.0001"])
    assert code == 1
    assert "no plan meets the SLO" in capsys.readouterr().out


MIX_SCENARIO = """
name: mix-test
kind: gpu_mix
llm: llama-3.1-8b
cost_model: roofline
workload:
  synthetic:
    arrival: poisson
    rate_per_s: 20
    n_requests: 160
    prompt_tokens: {dist: uniform, min: 100, max: 3000}
    output_tokens: {dist: uniform, min: 20, max: 100}
slo: {ttft_s: 0.5, tpot_s: 0.04}
search:
  gpus: [h100-sxm, l40s]
  tp: [1]
  bucket_edges_tokens: [1000]
  gpus_available: {h100-sxm: 1}
  capacity_requests: 60
  time_limit_s: 10
"""


def test_plan_gpu_mix_solves_within_capacities_and_verifies(tmp_path, capsys):
    path = tmp_path / "mix.yaml"
    path.write_text(MIX_SCENARIO)
    code = main(["plan", str(path), "--json", "--workers", "1"])
    out = json.loads(capsys.readouterr().out)
    program = out["program"]
    assert program["status"] == "optimal" and program["gap"] is not None
    assert set(out["demand_rps"]) == {"<1000", ">=1000"}
    assert sum(out["demand_rps"].values()) == pytest.approx(160 / 159 * 20, rel=0.2)
    # Time-sharing: per option, the bucket loads it takes over its capacities fit in its instances,
    # with the capacities the accepted solve used (derated when a first mix failed verification).
    derate = out["verification"]["capacity_derate"]
    cap = {(r["option"], r["bucket"]): r["capacity_rps"] * derate for r in out["capacity_table"]}
    used: dict = {}
    for a in program["assignment"]:
        used[a["option"]] = used.get(a["option"], 0.0) + a["rate_rps"] / cap[(a["option"], a["bucket"])]
    for option, load in used.items():
        assert load <= program["counts"][option] + 1e-6
    assert program["gpus_per_type"].get("h100-sxm", 0) <= 1          # availability respected
    assert (code == 0) == out["verification"]["meets_slo"]


def test_plan_expert_placement_reports_eplb_conventions(tmp_path, capsys):
    path = tmp_path / "experts.yaml"
    path.write_text("name: ep\nkind: expert_placement\nllm: mixtral-8x7b\n"
                    "search: {nodes: 2, gpus_per_node: 2, slots: 12, policy: eplb-global, generate_tokens: 4096}\n")
    assert main(["plan", str(path), "--json", "--workers", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    phy2log = np.array(out["phy2log"])
    assert phy2log.shape == (32, 12)                                   # every Mixtral layer is MoE
    assert all(set(row) == set(range(8)) for row in phy2log.tolist())  # every expert placed
    assert 0 < out["summary"]["mean_balancedness"] <= 1
