"""Result files of `simcluster simulate --out`: summary, Parquet records, iterations, KV series, trace."""

import json

import pandas as pd

from simcluster.cli import main
from simcluster.serving.metrics import ITERATION_STATS, REQUIRED_COLUMNS
from simcluster.serving.records import kv_use_series


def test_simulate_writes_every_output(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["simulate", "scenarios/serve-mixtral-ep.yaml", "--out", str(out), "--json",
                 "--set", "workload.trace.max_requests=60", "--set", "cost_model=roofline"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(capsys.readouterr().out)
    for key in ITERATION_STATS:
        assert 0 < summary[key] <= 1, key
    requests = pd.read_parquet(out / "requests.parquet")
    assert set(REQUIRED_COLUMNS) | {"max_itl_s", "kv_transfer_s"} <= set(requests.columns)
    assert len(requests) == 60
    iterations = pd.read_csv(out / "iterations.csv")
    assert {"flops", "bytes", "busy_s", "kv_used_tokens", "n_running"} <= set(iterations.columns)
    kv = pd.read_csv(out / "kv_use.csv")
    assert kv["kv_cache_use"].between(0, 1).all() and kv["replica"].nunique() == 3
    trace = json.loads((out / "trace.json").read_text())["traceEvents"]
    kinds = {e["ph"] for e in trace}
    assert kinds == {"M", "X", "C"}
    assert sum(e["ph"] == "X" for e in trace) == len(iterations)
    assert max(e["args"]["use"] for e in trace if e["ph"] == "C") == summary["kv_cache_use_max"]


def test_kv_use_series_bins_iterations_by_time():
    it = pd.DataFrame({"replica": ["a"] * 4, "start_s": [0.0, 0.4, 1.2, 1.9],
                       "kv_used_tokens": [10, 30, 50, 70], "kv_capacity_tokens": [100] * 4})
    series = kv_use_series(it, 1.0)
    assert series["time_s"].tolist() == [0.0, 1.0]
    assert series["kv_cache_use"].tolist() == [0.2, 0.6]
