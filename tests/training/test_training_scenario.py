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
