"""The CLI a newcomer meets: every command's --help has runnable examples, commands that report
numbers take --json and print one JSON object, and exit codes are 0 / 1 / 2 as documented."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest

from simcluster.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
# Leaf commands that print no numbers, and so need no --json.
NO_NUMBERS = {"validate": "prints ok / one error line per file",
              "calibrate run": "runs the GPU microbenchmarks and writes CSV files",
              "calibrate fit": "writes fit.json and prints its path"}


def leaf_commands() -> dict[str, argparse.ArgumentParser]:
    out = {}

    def walk(p, path):
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out[" ".join(path)] = p
        for s in subs:
            for name, sp in s.choices.items():
                walk(sp, [*path, name])
    walk(build_parser(), [])
    return out


LEAVES = leaf_commands()


def test_top_level_help_lists_exit_codes(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for code in ("0", "1", "2"):
        assert code in text.split("exit codes", 1)[1]


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_help_has_examples_that_parse(name, capsys):
    parser = LEAVES[name]
    assert parser.epilog and "examples:" in parser.epilog, f"simcluster {name}: add an epilog with examples"
    examples = [ln.strip() for ln in parser.epilog.replace("\\\n", " ").splitlines()
                if ln.strip().startswith("simcluster ")]
    assert any(ex.startswith(f"simcluster {name}") for ex in examples), f"simcluster {name}: no example of itself"
    full = build_parser()
    for ex in examples:
        try:
            full.parse_args(shlex.split(ex)[1:])
        except SystemExit as err:
            pytest.fail(f"example `{ex}` does not parse (exit {err.code})")
    assert main([*name.split(), "--help"]) == 0
    assert "examples:" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(LEAVES))
def test_commands_with_numbers_take_json(name):
    opts = {o for a in LEAVES[name]._actions for o in a.option_strings}
    assert "--json" in opts or name in NO_NUMBERS, f"simcluster {name}: add --json"


@pytest.mark.parametrize("argv", [
    ["estimate", "step", "--gpu", "h100-sxm", "--llm", "llama-3.1-8b", "--prefill", "1x512", "--decode", "8x1024"],
    ["estimate", "train-step", "--gpu", "h100-sxm", "--llm", "llama-3.2-1b", "--gpus", "8", "--dp", "8",
     "--seq", "2048", "--cost-model", "roofline"],
    ["estimate", "kernel", "gemm", "--gpu", "h100-sxm", "--m", "4096", "--n", "4096", "--k", "4096"],
], ids=["step", "train-step", "kernel-gemm"])
def test_json_output_is_one_object_with_numbers(argv, capsys):
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    assert code == 0, out[-500:]
    data = json.loads(out)
    assert isinstance(data, dict)
    assert any(isinstance(v, float) and v > 0 for v in data.values())


def test_bad_input_exits_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nllm: llama-3.1-8b\nworkload:\n  synthetic: {rate_per_s: -1, n_requests: 5}\n")
    for command in ("plan", "simulate"):
        assert main([command, str(bad), "--json"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err and str(bad) in err
    assert main(["simulate", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read file" in capsys.readouterr().err


def test_no_feasible_plan_exits_1(capsys, tmp_path):
    # A TTFT target no GPU can meet for these prompts: the plan command answers "none" with exit 1,
    # and the report says so in its verdict.
    code = main(["plan", str(ROOT / "scenarios/serve-llama8b-chat.yaml"), "--json", "--workers", "1",
                 "--set", "workload.trace.max_requests=40", "--set", "search.gpus=[l40s]", "--set", "search.tp=[1]",
                 "--set", "slo.ttft_s=0.001", "--out", str(tmp_path / "none")])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["best"] is None
    html = (tmp_path / "none" / "report.html").read_text()
    assert '<div class="verdict bad">No plan in the search space meets the SLO.</div>' in html
    assert ">Dropped candidates</h2>" in html
