"""Training plan search: closed-form pipeline times, the analytic estimate against the event
simulator, memory feasibility of every ranked plan, reasons for the dropped ones."""

import json

import pytest

from simcluster.cli import main
from simcluster.cost import cost_model_for
from simcluster.hardware.gpu import load_gpu
from simcluster.llm.spec import load_llm
from simcluster.optimize.sweep import SweepOptions
from simcluster.optimize.training_search import (
    TrainingSpace,
    candidate_plans,
    estimate_step,
    pipeline_s,
    search_training_plans,
)
from simcluster.training.memory import training_memory
from simcluster.training.plan import TrainingPlan
from simcluster.training.simulate import simulate_training

METHOD = "roofline"


@pytest.fixture(scope="module")
def llm():
    return load_llm("llama-3.1-8b")


@pytest.fixture(scope="module")
def cm():
    return cost_model_for("h100-sxm", METHOD)


def test_pipeline_time_closed_forms():
    # No pipeline: m micro-batches back to back.
    assert pipeline_s("1f1b", 8, 1, 1, 1.0, 1.0, 1.0) == pytest.approx(24.0)
    # 1F1B: (m + p - 1) slots (Narayanan et al. 2021); interleaving v divides the bubble by v.
    assert pipeline_s("1f1b", 8, 4, 1, 1.0, 1.0, 1.0) == pytest.approx(3.0 * 11)
    assert pipeline_s("interleaved", 8, 4, 3, 1.0, 1.0, 1.0) == pytest.approx(3.0 * 9)
    # ZB-H1: (p - 1)(F + B - W) of bubble instead of (p - 1)(F + B + W).
    assert pipeline_s("zero_bubble", 8, 4, 1, 1.0, 1.0, 1.0) == pytest.approx(24.0 + 3.0)


@pytest.mark.parametrize("tp,pp,dp,v,zero", [(2, 4, 2, 1, 1), (2, 4, 2, 2, 1), (1, 2, 8, 1, 0), (4, 1, 4, 1, 3)])
def test_estimate_tracks_the_event_simulator(llm, cm, tp, pp, dp, v, zero):
    plan = TrainingPlan(gpu="h100-sxm", n_gpus=tp * pp * dp, seq_len=4096, micro_batch=1, global_batch=64,
                        dp=dp, tp=tp, pp=pp, zero=zero, sequence_parallel=tp > 1, virtual_stages=v,
                        schedule="interleaved" if v > 1 else "1f1b", recompute="selective")
    est = estimate_step(llm, plan, cm, 8)
    sim = simulate_training(llm, plan, cm)
    assert est["step_s"] == pytest.approx(sim.time_s, rel=0.05)
    assert est["mfu"] == pytest.approx(sim.mfu, rel=0.05)


def test_candidates_multiply_to_the_gpu_count(llm):
    space = TrainingSpace(gpu="h100-sxm", n_gpus=16, seq_len=4096, global_batch=64)
    plans = candidate_plans(llm, space)
    assert plans and all(p.dp * p.tp * p.pp * p.cp == 16 for p in plans)
    assert {p.pp for p in plans} == {1, 2, 4, 8, 16}          # divisors of 16 that divide 32 layers
    assert all(p.schedule == "interleaved" for p in plans if p.virtual_stages > 1)


def test_search_ranks_only_plans_that_fit_and_says_why_others_do_not(llm, cm):
    space = TrainingSpace(gpu="h100-sxm", n_gpus=16, seq_len=8192, global_batch=32, tp=(1, 2, 4, 8, 16),
                          micro_batch=(1, 4), cp=(1,), virtual_stages=(1, 2))
    r = search_training_plans(llm, space, METHOD, simulate_top=3, sweep=SweepOptions(workers=1), cm=cm)
    memory_bytes = load_gpu("h100-sxm").memory_bytes
    assert r.rows and len(r.rows) + len(r.pruned) == r.candidates
    for row in r.rows:
        plan = TrainingPlan(**{k: row[k] for k in ("gpu", "n_gpus", "seq_len", "global_batch", "tp", "pp", "dp", "cp",
                                                     "ep", "micro_batch", "virtual_stages", "schedule", "recompute",
                                                     "zero", "sequence_parallel")})
        assert training_memory(llm, plan, memory_bytes).fits
        assert 0 < row["est_mfu"] < 1
    stages = {p["stage"] for p in r.pruned}
    assert stages == {"shape", "memory"}
    # Every reason names the plan field at fault (shape) or the memory peak against the GPU's.
    fields = {"n_gpus", "tp", "pp", "ep", "global_batch", "seq_len", "virtual_stages", "nodes", "sequence_parallel"}
    assert all(p["reason"].split(":")[0] in fields for p in r.pruned if p["stage"] == "shape")
    assert all("GiB" in p["reason"] and "> 80 GiB" in p["reason"] for p in r.pruned if p["stage"] == "memory")
    top = r.rows[:3]
    assert all("sim_step_s" in row for row in top) and "sim_step_s" not in r.rows[3]
    assert [row["sim_step_s"] for row in top] == sorted(row["sim_step_s"] for row in top)
    rest = [row["est_step_s"] for row in r.rows[3:]]
    assert rest == sorted(rest)
    # The simulated three are the three best estimates.
    assert max(row["est_step_s"] for row in top) <= min(rest)
    again = search_training_plans(llm, space, METHOD, simulate_top=3, sweep=SweepOptions(workers=1), cm=cm)
    assert [x["plan"] for x in again.rows] == [x["plan"] for x in r.rows]


TRAIN_SCENARIO = """
name: plan-train-test
kind: training
llm: llama-3.1-8b
cost_model: roofline
search:
  gpu: h100-sxm
  n_gpus: 16
  seq_len: 4096
  global_batch: 64
  tp: [1, 2, 4]
  micro_batch: [1, 2]
  recompute: [none, selective]
  zero: [1, 3]
  simulate_top: 2
"""


def test_plan_command_dispatches_training_scenarios(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text(TRAIN_SCENARIO)
    out = tmp_path / "out"
    assert main(["plan", str(path), "--json", "--workers", "1", "--out", str(out)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["kind"] == "training" and payload["best"]["sim_mfu"] > 0
    assert {"plan.json", "plans.csv", "pruned.csv", "plans.png"} <= {p.name for p in out.iterdir()}
    assert main(["plan", str(path), "--workers", "1"]) == 0
    assert "Training plans" in capsys.readouterr().out
