"""`simcluster estimate train-step` end to end, without a subprocess."""

import json

import pytest

from simcluster.cli import main
from simcluster.commands.train_step import estimate_train_step


def test_cli_json_has_the_promised_fields(capsys):
    rc = main(["estimate", "train-step", "--gpu", "h200-sxm", "--llm", "llama-3.2-1b", "--gpus", "4", "--dp", "4",
               "--tp", "1", "--pp", "1", "--zero", "3", "--micro-batch", "4", "--seq", "2048", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert set(out["breakdown"]) == {"compute_s", "exposed_comm_s", "bubble_s", "optimizer_s"}
    assert out["time_s"] == pytest.approx(sum(out["breakdown"].values()))
    assert 0 < out["mfu"] < 1 and out["fits"] is True
    assert out["tokens_per_s"] == pytest.approx(4 * 4 * 2048 / out["time_s"])
    assert 5e9 < out["peak_memory_bytes"] < 141e9


def test_cli_bad_plan_exits_2(capsys):
    rc = main(["estimate", "train-step", "--gpu", "h100-sxm", "--llm", "llama-3.1-8b", "--gpus", "8", "--dp", "3"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "n_gpus" in err and len(err.strip().splitlines()) == 1


def test_pipeline_flags_reach_the_simulator():
    common = dict(gpu="h100-sxm", llm="llama-3.1-70b", gpus=64, tp=8, pp=4, dp=2, global_batch=64, seq=4096,
                  sequence_parallel=True, recompute="selective", cost_model="roofline")
    plain = estimate_train_step(**common)
    inter = estimate_train_step(**common, schedule="interleaved", virtual_stages=5)
    assert inter["breakdown"]["bubble_s"] < plain["breakdown"]["bubble_s"]
    assert inter["peak_memory_bytes"] > plain["peak_memory_bytes"]        # (1 + (p-1)/(pv)) more activations
    fp8 = estimate_train_step(**common, dtype="fp8")
    assert fp8["breakdown"]["compute_s"] < 0.8 * plain["breakdown"]["compute_s"]
