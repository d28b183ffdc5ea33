"""CLI: calibrate run|fit|report, estimate kernel gemm|attention, estimate collective, estimate step methods."""

import json
import shutil

import pytest

from simcluster.cli import main
from simcluster.cost.calibration import read_fit


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_estimate_kernel_gemm_issue_example(capsys):
    assert main(["estimate", "kernel", "gemm", "--gpu", "h100-sxm", "--m", "1024", "--n", "4096", "--k", "4096",
                 "--dtype", "bf16", "--json"]) == 0
    out = _json(capsys)
    assert out["method"] == "measured" and out["bound"] == "compute"
    assert out["achieved_tflops"] == pytest.approx(2 * 1024 * 4096 * 4096 / out["time_s"] / 1e12)
    assert 300 < out["achieved_tflops"] < 989.4      # below the H100 dense bf16 peak


def test_estimate_kernel_attention_prefill_and_decode(capsys):
    base = ["estimate", "kernel", "attention", "--gpu", "h200-sxm", "--heads", "32", "--kv-heads", "8",
            "--head-dim", "128", "--json"]
    assert main(base + ["--phase", "prefill", "--batch", "2", "--seq-len", "2048"]) == 0
    prefill = _json(capsys)
    assert prefill["method"] == "measured" and prefill["bound"] == "compute"
    assert main(base + ["--phase", "decode", "--batch", "64", "--context-len", "4096"]) == 0
    decode = _json(capsys)
    assert decode["bound"] == "memory" and decode["achieved_bytes_per_s"] < 4.8e12


def test_estimate_kernel_transferred_gpu(capsys):
    assert main(["estimate", "kernel", "gemm", "--gpu", "a100-sxm-80gb", "--m", "4096", "--n", "4096",
                 "--k", "4096", "--json"]) == 0
    assert _json(capsys)["method"] == "transferred"


def test_estimate_collective(capsys):
    args = ["estimate", "collective", "--gpu", "h100-sxm", "--op", "all_reduce", "--bytes", "64MiB", "--gpus", "8"]
    assert main(args + ["--json"]) == 0
    one = _json(capsys)
    assert main(args + ["--nodes", "2", "--json"]) == 0
    two = _json(capsys)
    assert one["bytes"] == 64 * 2**20 and two["time_s"] > one["time_s"] > 0
    assert one["busbw_bytes_per_s"] == pytest.approx(one["algbw_bytes_per_s"] * 2 * 7 / 8)


def test_estimate_collective_bad_input(capsys):
    assert main(["estimate", "collective", "--gpu", "h100-sxm", "--op", "all_reduce", "--bytes", "lots",
                 "--gpus", "8"]) == 2
    assert "lots" in capsys.readouterr().err
    assert main(["estimate", "collective", "--gpu", "h100-sxm", "--op", "all_reduce", "--bytes", "1MiB",
                 "--gpus", "16"]) == 2
    assert "--nodes" in capsys.readouterr().err


@pytest.mark.parametrize("gpu,allowed", [("h100-sxm", {"measured", "fitted"}), ("h200-sxm", {"measured", "fitted"}),
                                         ("a100-sxm-80gb", {"transferred"})])
def test_estimate_step_reports_calibrated_methods(gpu, allowed, capsys):
    assert main(["estimate", "step", "--gpu", gpu, "--llm", "llama-3.1-8b", "--prefill", "1x2048",
                 "--decode", "64x1024", "--json"]) == 0
    methods = set(_json(capsys)["methods"])
    assert methods & allowed and methods <= allowed | {"roofline"}


def test_calibrate_run_print_only(capsys):
    assert main(["calibrate", "run", "--gpu", "h100-sxm", "--print"]) == 0
    out = capsys.readouterr().out
    assert "-m calibrate run --out profiles/measured/h100-sxm" in out


def test_calibrate_run_without_a_gpu_exits_2(capsys):
    import importlib.util
    import subprocess
    import sys
    if importlib.util.find_spec("torch") is not None:
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                               capture_output=True, text=True)
        if probe.stdout.strip() == "True":
            pytest.skip("a GPU is present: calibrate run would start measuring")
    assert main(["calibrate", "run", "--gpu", "h100-sxm"]) == 2
    err = capsys.readouterr().err
    assert "needs" in err and len(err.strip().splitlines()) == 1


def test_calibrate_fit_writes_fit_json(tmp_path, capsys):
    shutil.copytree("profiles/measured/h100-sxm", tmp_path / "h100-sxm",
                    ignore=shutil.ignore_patterns("fit.json"))
    assert main(["calibrate", "fit", "--gpu", "h100-sxm", "--dir", str(tmp_path), "--split", "fit"]) == 0
    path = tmp_path / "h100-sxm" / "fit.json"
    assert str(path) in capsys.readouterr().out
    cal = read_fit(path)
    assert cal.provenance["split"] == "fit" and cal.gemm and cal.prefill is not None
    assert set(cal.provenance["sources_sha256"]) >= {"gemm.csv", "attention_decode.csv"}
    assert "model_forward.csv" not in cal.provenance["sources_sha256"]


def test_calibrate_report_json_and_plots(tmp_path, capsys):
    out = tmp_path / "acc"
    assert main(["calibrate", "report", "--gpu", "h100-sxm", "--json", "--out", str(out)]) == 0
    rows = _json(capsys)
    families = {r["family"] for r in rows}
    assert {"gemm_bf16", "attention_prefill", "attention_decode", "forward_decode"} <= families
    assert all(r["n"] > 0 and r["max_ape_pct"] >= r["p90_ape_pct"] >= 0 for r in rows)
    assert (out / "accuracy.md").read_text().startswith("| GPU | family |")
    assert (out / "h100-sxm_gemm_bf16.png").read_bytes()[:4] == b"\x89PNG"


def test_calibrate_unknown_gpu(capsys):
    assert main(["calibrate", "fit", "--gpu", "no-such-gpu"]) == 2
    assert "no-such-gpu" in capsys.readouterr().err
