import json

import pytest

from simcluster.catalog import names
from simcluster.cli import main
from simcluster.commands.estimate import estimate_step


@pytest.mark.parametrize("llm", names("llms"))
def test_estimate_step_json_for_every_catalog_model(llm, capsys):
    tp = 8
    rc = main(["estimate", "step", "--gpu", "h200-sxm", "--llm", llm, "--tp", str(tp),
               "--prefill", "1x512", "--decode", "8x1024", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["time_s"] > 0
    assert abs(sum(o["time_s"] for o in out["ops"]) - out["time_s"]) < 1e-12
    kinds = {o["kind"] for o in out["ops"]}
    assert {"gemm", "attention_prefill", "attention_decode", "collective"} <= kinds


def test_issue_example_and_eager_is_slower(capsys):
    args = ["estimate", "step", "--gpu", "h100-sxm", "--llm", "llama-3.1-8b", "--tp", "1",
            "--prefill", "1x2048", "--decode", "64x1024"]
    assert main(args + ["--cuda-graphs", "--json"]) == 0
    graphs = json.loads(capsys.readouterr().out)
    assert main(args + ["--eager", "--json"]) == 0
    eager = json.loads(capsys.readouterr().out)
    assert eager["time_s"] > graphs["time_s"]
    assert graphs["new_tokens"] == 2048 + 64


def test_decode_is_memory_bound_and_scales_with_context():
    short = estimate_step("h100-sxm", "llama-3.1-8b", decode=[(64, 1024)])
    long = estimate_step("h100-sxm", "llama-3.1-8b", decode=[(64, 8192)])
    attn = lambda r: next(o for o in r["ops"] if o["kind"] == "attention_decode")
    assert attn(long)["time_s"] == pytest.approx(attn(short)["time_s"] * 8, rel=0.05)
    assert attn(short)["bound"] == "memory"


def test_bad_arguments_exit_2(capsys):
    assert main(["estimate", "step", "--gpu", "h100-sxm", "--llm", "llama-3.1-8b", "--prefill", "2by3"]) == 2
    assert main(["estimate", "step", "--gpu", "h100-sxm", "--llm", "llama-3.1-8b", "--tp", "3", "--decode", "1x10"]) == 2
    assert main(["estimate", "step", "--gpu", "x100", "--llm", "llama-3.1-8b", "--decode", "1x10"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "x100" in err


def test_hf_config_path_accepted(capsys):
    rc = main(["estimate", "step", "--gpu", "h100-sxm", "--llm", "tests/llm/configs/llama-3.1-8b/config.json",
               "--decode", "4x100", "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["time_s"] > 0


def test_eager_step_is_the_host_issue_pipelined_with_the_device(capsys):
    from simcluster.llm.ops import Batch, forward_ops
    from simcluster.llm.spec import load_llm
    args = ["estimate", "step", "--gpu", "h200-sxm", "--llm", "llama-3.2-1b", "--decode", "1x2048", "--json"]
    assert main(args) == 0
    graphs = json.loads(capsys.readouterr().out)
    assert main(args + ["--eager"]) == 0
    eager = json.loads(capsys.readouterr().out)
    # The measured calibration host's rate (model_forward.csv probes), tens of microseconds a kernel.
    assert "model_forward.csv" in eager["host_source"] and 5e-6 < eager["host_per_kernel_s"] < 1e-4
    kernels = sum(o.kernels * o.repeat for o in forward_ops(load_llm("llama-3.2-1b"), Batch(decode=(2048,))))
    # Host-bound at one sequence: at least the host's issue time, at most that plus the device time.
    assert kernels * eager["host_per_kernel_s"] < eager["time_s"] < kernels * eager["host_per_kernel_s"] + graphs["time_s"]
    # A host that issues almost instantly leaves the device time.
    assert main(args + ["--eager", "--host-per-kernel-us", "0.001"]) == 0
    fast = json.loads(capsys.readouterr().out)
    assert fast["host_source"] == "given"
    assert fast["time_s"] == pytest.approx(graphs["time_s"], rel=0.01)
    # A host rate means nothing to a graph replay: one line, exit 2.
    assert main(args + ["--host-per-kernel-us", "20"]) == 2
    err = capsys.readouterr().err
    assert "--host-per-kernel-us" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    # A GPU without measured forwards falls back to per-op launch gaps, and says so.
    off = estimate_step("a100-sxm-80gb", "llama-3.2-1b", decode=[(1, 2048)], cuda_graphs=False)
    assert off["launch"] == "eager (launch gaps)" and off["host_source"] is None
