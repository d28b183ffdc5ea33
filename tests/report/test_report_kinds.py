"""Reports of every plan kind, from real (small) plan runs, and the renderers on a known document."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from simcluster.cli import main
from simcluster.llm.spec import load_llm
from simcluster.report.assumptions import method_summary, op_methods
from simcluster.report.document import Figure, Report, Section, Table
from simcluster.report.html import render_html, write_report
from simcluster.report.markdown import render_markdown
from simcluster.report.plots import png
from simcluster.report.schema_doc import unit_of

ROOT = Path(__file__).resolve().parents[2]


def _plan(scenario: str, out: Path, *overrides: str) -> str:
    args = ["plan", str(ROOT / "scenarios" / scenario), "--json", "--workers", "1", "--out", str(out)]
    for o in overrides:
        args += ["--set", o]
    assert main(args) in (0, 1)
    return (out / "report.html").read_text()


def _images(html: str) -> int:
    return len(re.findall(r'<img alt="[^"]*" src="data:image/png;base64,', html))


def test_training_report_has_ranking_timeline_and_memory(tmp_path, capsys):
    html = _plan("train-llama70b-plan.yaml", tmp_path / "t", "search.micro_batch=[1]", "search.virtual_stages=[5]",
                 "search.recompute=[selective]", "search.simulate_top=1")
    for title in ("Ranked plans", "Where the step time goes", "Pipeline timeline of the best plan",
                  "Memory per GPU", "Assumptions"):
        assert f">{title}</h2>" in html
    assert _images(html) >= 2
    assert "TP8 PP2 DP4" in html     # the plans are named in the ranked table
    # From plan.json alone (no scenario: nothing re-simulated) the ranking and breakdown remain.
    payload = json.loads((tmp_path / "t" / "plan.json").read_text())
    write_report(tmp_path / "again", payload)
    again = (tmp_path / "again" / "report.html").read_text()
    assert ">Ranked plans</h2>" in again and ">Where the step time goes</h2>" in again
    assert "Pipeline timeline" not in again


def test_expert_placement_report_compares_with_eplb(tmp_path, capsys):
    html = _plan("plan-expert-placement.yaml", tmp_path / "e", "search.time_limit_s=3")
    assert "Expert-load heatmaps" in html and "EPLB balancedness" in html
    assert _images(html) >= 3      # balance per layer, tokens per expert, tokens per GPU
    md = (tmp_path / "e" / "report.md").read_text()
    assert "| layer | policy_used | balancedness | EPLB balancedness |" in md


def test_gpu_mix_report_shows_the_mix_and_its_verification(tmp_path, capsys):
    html = _plan("plan-gpu-mix.yaml", tmp_path / "m", "workload.trace.max_requests=60", "search.tp=[1]",
                 "search.capacity_requests=30", "search.time_limit_s=10")
    for title in ("Demand and capacities", "The chosen mix", "Verification", "Assumptions"):
        assert f">{title}</h2>" in html


def test_renderers_escape_and_emphasise_the_best_row():
    fig = Figure("f", "a <figure>", png(__import__("matplotlib.pyplot").pyplot.figure()))
    rep = Report("T <1>", "sub & title", [("cost", "1.00 USD/h")],
                 [Section("S|1", ["p <b>"], [Table("cap", pd.DataFrame({"a|b": ["x|y", "2"]}), highlight_first=True)],
                          [fig], ["note"])], verdict="do <this>")
    html = render_html(rep)
    assert "<b>" not in html.replace("<body>", "") and "&lt;b&gt;" in html and "&lt;this&gt;" in html
    assert '<tr class="best"><td>x|y</td>' in html
    assert "<script" not in html and "http" not in html.split("</style>")[1]
    md = render_markdown(rep)
    assert "| a\\|b |" in md and "| **x\\|y** |" in md and "![a <figure>](figures/f.png)" in md


def test_assumptions_name_the_method_of_each_family():
    methods = op_methods(load_llm("llama-3.1-8b"), [("h100-sxm", 1, 1, 1), ("l40s", 1, 1, 1)])
    assert set(methods["method"]) <= {"measured", "fitted", "transferred", "roofline", "alpha-beta"}
    shares = methods.groupby(["gpu", "phase"])["share"].sum()
    assert ((shares - 1.0).abs() < 1e-9).all()          # shares of each iteration add up to 1
    table = method_summary(methods).set_index("gpu")
    assert table.loc["h100-sxm", "measured tables"] == "yes" and table.loc["l40s", "measured tables"] == "no"
    # L40S was never measured: nothing about it may claim to be measured on it.
    assert "measured" not in set(methods.loc[methods["gpu"] == "l40s", "method"])


@pytest.mark.parametrize("name, unit", [("ttft_s", "s"), ("swap_space_bytes", "bytes"), ("rate_per_s", "1/s"),
                                        ("host_to_device_bandwidth_bytes_per_s", "bytes/s"),
                                        ("budget_usd_per_hour", "USD/hour"), ("seq_len", "tokens"), ("tp", "")])
def test_units_are_read_off_key_names(name, unit):
    assert unit_of(name) == unit


def test_simulation_report_of_a_disaggregated_deployment(tmp_path):
    from simcluster.commands.simulate import run_scenario
    from simcluster.report.html import write_simulation_report
    from simcluster.scenario import load_scenario
    scenario = load_scenario(ROOT / "scenarios/serve-llama70b-disagg.yaml", ["workload.synthetic.n_requests=40"])
    result = run_scenario(scenario)
    summary = {"scenario": scenario.name, **result.summary(scenario.slo.model_dump())}
    write_simulation_report(tmp_path / "s", summary, result, scenario)
    html = (tmp_path / "s" / "report.html").read_text()
    for title in ("Summary", "Iteration timeline", "KV-cache use over time", "Assumptions"):
        assert f">{title}</h2>" in html
    # The headline TTFT is the simulation's own number.
    assert _images(html) >= 2 and f"{summary['ttft_s_p90'] * 1e3:.1f} ms" in html


def test_latency_curves_obey_goodput_at_most_offered_rate():
    from simcluster.commands.inputs import scenario_llm, scenario_trace
    from simcluster.report.serving_sections import CURVE_FRACTIONS, latency_curves
    from simcluster.scenario import load_scenario
    scenario = load_scenario(ROOT / "scenarios/serve-llama8b-chat.yaml", ["workload.trace.max_requests=60"])
    llm, trace = scenario_llm(scenario), scenario_trace(scenario)
    slo = scenario.slo.model_dump()
    row = {"plan": "h100 TP1", "gpu": "h100-sxm", "tp": 1, "pp": 1, "ep": 1, "max_num_seqs": 256,
           "max_batched_tokens": 8192, "replicas": 1}
    curves = latency_curves(llm, trace, [row], slo, "calibrated", "least_outstanding", n_requests=60)
    assert list(curves["rate_per_s"]) == pytest.approx([trace.rate_per_s * f for f in CURVE_FRACTIONS])
    assert (curves["goodput_per_s"] <= curves["rate_per_s"] * (1 + 1e-9)).all()
    # At half the rate an H100 serves Llama-8B chat well within the SLO: goodput = offered rate.
    assert curves["goodput_per_s"].iloc[0] == pytest.approx(curves["rate_per_s"].iloc[0])
    # More load never makes the p90 TTFT of the same requests better by much (queues only grow).
    ttft = curves["ttft_s_p90"].to_numpy()
    assert ttft[-1] >= ttft[0]
