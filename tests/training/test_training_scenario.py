"""Training scenarios: schema, `simcluster simulate` on kind 'training', output files."""

import json
from pathlib import Path

import pytest

from simcluster.cli import main
from simcluster.scenario import ScenarioError, load_scenario

SCENARIO = Path(__file__).resolve().parents[2] / "scenarios" / "train-llama70b.yaml"


def test_scenario_loads_with_a_training_plan():
    s = load_scenario(SCENARIO)
    assert s.kind == "training" and s.training.tp * s.training.pp * s.training.dp == s.training.n_gpus


def test_simulate_writes_summary_trace_and_breakdown(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["simulate", str(SCENARIO), "--json", "--out", str(out)])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0 and summary["fits"]
    assert {p.name for p in out.iterdir()} >= {"summary.json", "trace.json", "breakdown.csv"}
    trace = json.loads((out / "trace.json").read_text())
    passes = [e for e in trace["traceEvents"] if e["ph"] == "X" and e["tid"] == 0 and e["name"][0] in "FB"]
    # 64 micro-batches × 5 chunks × (F, B) on each of the 4 pipeline devices.
    assert len(passes) == 64 * 5 * 2 * 4
    assert max(e["ts"] + e["dur"] for e in trace["traceEvents"] if e["ph"] == "X") <= summary["time_s"] * 1e6 + 1


def test_overrides_change_the_plan(capsys):
    rc = main(["simulate", str(SCENARIO), "--json", "--set", "training.schedule=1f1b",
               "--set", "training.virtual_stages=1"])
    plain = json.loads(capsys.readouterr().out)
    main(["simulate", str(SCENARIO), "--json"])
    inter = json.loads(capsys.readouterr().out)
    assert rc == 0 and plain["breakdown"]["bubble_s"] > inter["breakdown"]["bubble_s"]


def test_bad_training_section_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SCENARIO.read_text().replace("dp: 2", "dp: 3"))
    with pytest.raises(ScenarioError, match=r"bad.yaml: training.*n_gpus") as err:
        load_scenario(bad)
    assert "\n" not in str(err.value)


def _sim(capsys, *sets):
    """`simulate --json` of the bundled scenario at 16 sequences a step with these --set overrides;
    exit 0, or 1 exactly when the plan does not fit (the summary still printed)."""
    args = ["simulate", str(SCENARIO), "--json", "--set", "training.global_batch=16"]
    for s in sets:
        args += ["--set", s]
    rc = main(args)
    out = json.loads(capsys.readouterr().out)
    assert rc == (0 if out["fits"] else 1)
    return out


def test_every_plan_of_the_issue_is_selectable_from_the_scenario(capsys):
    """Each parallelism, schedule, recompute policy, precision and MoE knob of a training plan is a
    scenario key, reaches the simulator, and moves time or memory the way it should."""
    mem, t = (lambda r: r["peak_memory_bytes"]), (lambda r: r["time_s"])
    base = _sim(capsys)                                   # ZeRO-1, SP, interleaved x5, selective, bf16
    assert (base["zero"], base["schedule"], base["grad_accum"]) == (1, "interleaved", 8)
    zero = {z: _sim(capsys, f"training.zero={z}") for z in (0, 2, 3)}
    assert mem(zero[0]) > mem(base) > mem(zero[2]) >= mem(zero[3])
    assert t(zero[3]) > t(base)                           # FSDP gathers the weights every pass
    assert mem(_sim(capsys, "training.sequence_parallel=false")) > mem(base)
    one = {s: _sim(capsys, f"training.schedule={s}", "training.virtual_stages=1") for s in ("gpipe", "1f1b", "zero_bubble")}
    assert mem(one["gpipe"]) > mem(one["1f1b"])           # GPipe holds every micro-batch's activations
    assert one["zero_bubble"]["breakdown"]["bubble_s"] < one["1f1b"]["breakdown"]["bubble_s"]
    assert base["breakdown"]["bubble_s"] < one["1f1b"]["breakdown"]["bubble_s"]
    cp = _sim(capsys, "training.cp=2", "training.dp=1")
    assert cp["cp"] == 2 and mem(cp) < mem(base)          # each rank holds half the sequence
    full = _sim(capsys, "training.recompute=full")
    assert mem(full) < mem(base) and t(full) > t(base)
    assert mem(_sim(capsys, "training.optimizer_state_dtype=bf16")) < mem(base)
    assert t(_sim(capsys, "training.dtype=fp8")) < t(base)
    assert _sim(capsys, "training.global_batch=32")["grad_accum"] == 16
    moe = ("llm=mixtral-8x7b", "training.virtual_stages=2", "training.ep=2")
    even, skewed = _sim(capsys, *moe), _sim(capsys, *moe, "training.moe_imbalance=1.5")
    capped = _sim(capsys, *moe, "training.moe_imbalance=1.5", "training.capacity_factor=1.0")
    assert even["ep"] == 2 and t(skewed) > t(even)
    assert t(capped) < t(skewed)                          # tokens over capacity are dropped
