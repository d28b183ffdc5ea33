"""Golden runs of the serving scenario files through the CLI, in a fast mode.

Each scenario runs `simcluster simulate FILE --json` on its first 300 requests with the roofline
cost model (so a recalibration of measured kernels does not move these numbers; the calibrated
model has its own accuracy tests) and the key results must equal the golden JSON within 1e-9
relative. After a deliberate change of the simulator, regenerate with UPDATE_GOLDEN=1.
"""

import json
import math
import os
from pathlib import Path

import pytest

from simcluster.cli import main

GOLDEN = Path(__file__).parent / "golden"
FAST = ["--set", "workload.trace.max_requests=300", "--set", "cost_model=roofline"]
KEYS = ("requests", "completed", "unfinished", "ttft_s_p50", "ttft_s_p90", "tpot_s_p50", "tpot_s_p90",
        "e2e_s_p90", "max_itl_s_p90", "queue_s_mean", "output_token_throughput_per_s", "slo_attainment",
        "prefix_cache_hit_rate", "cached_tokens_total", "preemptions_total", "kv_transfer_bytes",
        "gpu_time_utilisation", "mfu", "mbu", "kv_cache_use_mean", "kv_cache_use_max", "iterations",
        "usd_per_million_tokens", "duration_s")
SCENARIOS = ("serve-mooncake-prefix-cache", "serve-disaggregated", "serve-mixtral-ep")


def _run(name, capsys) -> dict:
    code = main(["simulate", f"scenarios/{name}.yaml", "--json", *FAST])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    return {k: summary.get(k, "missing") for k in KEYS}


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_matches_its_golden_results(name, capsys):
    got = _run(name, capsys)
    path = GOLDEN / f"{name}.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    want = json.loads(path.read_text())
    assert set(got) == set(want)
    for key, value in want.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(got[key]), key
        elif isinstance(value, float):
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
        else:
            assert got[key] == value, key


def test_what_each_scenario_is_about(capsys):
    """The feature each file demonstrates is visible in its results."""
    prefix = _run("serve-mooncake-prefix-cache", capsys)
    assert prefix["cached_tokens_total"] > 0 and prefix["completed"] == 300
    pd_run = _run("serve-disaggregated", capsys)
    assert pd_run["kv_transfer_bytes"] > 0
    ep = _run("serve-mixtral-ep", capsys)
    assert ep["unfinished"] == 0 and ep["mfu"] > 0
