"""Bad scenario files fail with one line naming the file and key, exit code 2, no traceback."""

import json
import textwrap

import pytest

from simcluster.cli import main
from simcluster.scenario import ScenarioError, load_scenario

GOOD = textwrap.dedent("""\
    name: t
    llm: llama-3.1-8b
    workload:
      synthetic:
        arrival: poisson
        rate_per_s: 2
        n_requests: 50
        prompt_tokens: {dist: fixed, value: 256}
        output_tokens: {dist: fixed, value: 32}
    slo: {ttft_s: 1.0, tpot_s: 0.1}
    serving:
      replicas: [{gpu: h100-sxm, count: 1}]
    search:
      gpus: [h100-sxm]
      tp: [1]
      max_replicas: 2
    """)


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text, key, expected", [
    ("name: t\nllm: [unclosed\n", "YAML syntax error", "line"),
    (GOOD + "colour: blue\n", "colour", "unknown key"),
    (GOOD.replace("rate_per_s: 2", "rate_per_s: -2"), "workload.synthetic.rate_per_s", "greater than 0"),
    (GOOD.replace("count: 1", "count: two"), "serving.replicas[0].count", "integer"),
    (GOOD.replace("gpu: h100-sxm, count", "gpu: h900, count"), "serving.replicas[0].gpu", "unknown GPU 'h900'"),
    (GOOD.replace("llm: llama-3.1-8b", "llm: llama-9"), "llm", "unknown LLM 'llama-9'"),
    (GOOD.replace("tp: [1]", "tp: [3]"), "search.tp", "powers of two"),
    ("", "(top level)", "empty"),
    ("- a\n- b\n", "(top level)", "mapping"),
])
def test_bad_files_name_file_key_and_expectation(tmp_path, capsys, text, key, expected):
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(path)
    assert key in message and expected in message
    assert main(["validate", path]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.strip().count("\n") == 0 and key in captured.err


def test_every_command_exits_2_on_bad_file_and_writes_nothing(tmp_path, capsys):
    path = write(tmp_path, GOOD + "colour: blue\n")
    out = tmp_path / "out"
    for cmd in ("plan", "simulate"):
        assert main([cmd, path, "--out", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "colour" in err


def test_set_overrides_apply_and_are_validated(tmp_path):
    path = write(tmp_path, GOOD)
    s = load_scenario(path, ["slo.ttft_s=0.25", "serving.replicas.0.count=3", "workload.synthetic.n_requests=7"])
    assert s.slo.ttft_s == 0.25
    assert s.serving.replicas[0].count == 3
    assert s.workload.synthetic.n_requests == 7
    with pytest.raises(ScenarioError, match="slo.ttft_s"):
        load_scenario(path, ["slo.ttft_s=-1"])
    with pytest.raises(ScenarioError, match="expected key.path=value"):
        load_scenario(path, ["slo.ttft_s"])


def test_scenario_is_frozen(tmp_path):
    s = load_scenario(write(tmp_path, GOOD))
    with pytest.raises(Exception):
        s.seed = 3


def test_missing_file_and_empty_trace(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n")
    text = GOOD.split("workload:")[0] + f"workload:\n  trace: {{path: {empty}}}\n" + "serving:\n  replicas: [{gpu: h100-sxm}]\n"
    path = write(tmp_path, text)
    assert main(["simulate", path, "--json"]) == 2
    err = capsys.readouterr().err
    assert "empty.csv" in err and "Traceback" not in err


def test_simulate_json_and_outputs(tmp_path, capsys):
    path = write(tmp_path, GOOD)
    out = tmp_path / "out"
    assert main(["simulate", path, "--json", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["completed"] == 50
    names = {p.name for p in out.iterdir()}
    assert names >= {"summary.json", "iterations.csv", "trace.json"}
    assert names & {"requests.csv", "requests.parquet"}
    trace = json.loads((out / "trace.json").read_text())
    assert any(e["ph"] == "X" for e in trace["traceEvents"])
