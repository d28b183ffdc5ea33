"""Report sections for GPU-mix and expert-placement plans (and a plain table for any other kind)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from simcluster.report import plots
from simcluster.report.document import Figure, Report, Section, Table


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return "–" if v is None else ("yes" if v else "no")
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def scalar_table(rows: list[dict], caption: str, top: int = 30, highlight_first: bool = False) -> Table:
    """The scalar columns of flat records (nested values dropped), numbers to 4 significant digits."""
    frame = pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rows[:top]])
    return Table(caption, frame.map(_fmt) if len(frame) else frame, highlight_first=highlight_first)


def gpu_mix_sections(payload: dict, scenario=None) -> Report:
    """The report of a GPU-mix plan: demand per bucket, simulated capacities, the program's mix and
    its verification on the whole workload."""
    program = payload.get("program") or {}
    v = payload.get("verification") or {}
    rep = Report(title=f"GPU mix: {payload.get('scenario', '')}",
                 subtitle=f"{payload.get('llm', '')} · {payload.get('requests', '?')} requests · demand "
                          + ", ".join(f"{b} {r:.2f} req/s" for b, r in payload.get("demand_rps", {}).items()))
    counts = program.get("counts") or {}
    if program.get("status") in ("optimal", "feasible") and counts:
        rep.verdict = ("Rent " + ", ".join(f"{n} × {o}" for o, n in counts.items())
                       + f" for {program['objective_usd_per_hour']:.2f} USD/h"
                       + (f"; verified: {v['slo_attainment']:.1%} of requests meet the SLO." if v else "."))
        rep.verdict_ok = bool(v.get("meets_slo", True))
    else:
        rep.verdict = f"The program found no mix (status {program.get('status', 'not run')})."
        rep.verdict_ok = False
    rep.facts = [("status", str(program.get("status", "–"))),
                 ("cost", f"{program['objective_usd_per_hour']:.2f} USD/h" if program.get("objective_usd_per_hour")
                  else "–"),
                 ("simulations", str(payload.get("simulations", "–"))),
                 ("search time", f"{payload.get('wall_s', 0):.1f} s")]
    demand = pd.DataFrame([{"bucket": b, "req/s": f"{r:.3f}"} for b, r in payload.get("demand_rps", {}).items()])
    rep.sections.append(Section("Demand and capacities", [
        "Requests are bucketed by prompt length; each option's capacity per instance on each bucket's requests "
        "is found by simulation (bisection over the request rate within the SLO)."],
        tables=[Table("Arrival rate per bucket", demand),
                scalar_table(payload.get("capacity_table", []), "Simulated capacity per instance and bucket")]))
    assignment = program.get("assignment") or []
    if assignment:
        buckets = list(payload.get("demand_rps", {}))
        options = list(dict.fromkeys(a["option"] for a in assignment))
        parts = {o: [sum(a.get("rate_rps", 0.0) for a in assignment if a["option"] == o and a["bucket"] == b)
                     for b in buckets] for o in options}
        rep.sections.append(Section("The chosen mix", [
            f"The integer program's answer ({program.get('status')}, gap {_fmt(program.get('gap'))}, "
            f"{program.get('solve_time_s', 0):.2f} s): which option serves which share of each bucket."],
            tables=[scalar_table(assignment, "Who serves which bucket")],
            figures=[Figure("mix", "Request rate per bucket by serving option",
                            plots.stacked_bar_plot(buckets, parts, "requests/s"))]))
    if program.get("infeasible_constraints"):
        rep.sections.append(Section("Why no mix", notes=list(program["infeasible_constraints"])))
    if v:
        rep.sections.append(Section("Verification", [
            "The chosen mix simulated on the whole workload, every replica group at once."],
            tables=[Table("Verification", pd.DataFrame([{"metric": k, "value": _fmt(x)} for k, x in v.items()
                                                        if not isinstance(x, (dict, list))]))]))
    if payload.get("pruned"):
        rep.sections.append(Section("Dropped options", tables=[scalar_table(payload["pruned"], "Dropped, and why")]))
    if payload.get("notes"):
        rep.sections.append(Section("Notes", notes=list(payload["notes"])))
    if scenario is not None and payload.get("capacity_table"):
        import re

        from simcluster.commands.inputs import scenario_llm
        from simcluster.report.serving_sections import assumptions_section
        shapes = []
        for row in payload["capacity_table"]:
            tp = re.search(r"TP(\d+)", str(row.get("option", "")))
            shapes.append((row["gpu"], int(tp.group(1)) if tp else 1, 1, 1))
        rep.sections.append(assumptions_section(scenario_llm(scenario), shapes, scenario.cost_model))
    return rep


def scenario_expert_loads(scenario) -> np.ndarray:
    """The loads an expert-placement scenario places: its CSV, or loads generated from its seed."""
    from simcluster.commands.inputs import scenario_llm
    from simcluster.optimize.expert_loads import generate_loads, read_loads_csv
    s = scenario.search
    if s.loads:
        path = Path(s.loads) if Path(s.loads).is_absolute() else Path(scenario.base_dir) / s.loads
        return read_loads_csv(path)
    llm = scenario_llm(scenario)
    layers = sum(1 for i in range(llm.n_layers) if llm.is_moe_layer(i))
    return generate_loads(layers, llm.moe.n_experts, s.generate_tokens, s.generate_skew, scenario.seed)


def placement_sections(payload: dict, scenario=None) -> Report:
    """The report of an expert placement: per-layer balance and cross-node traffic, and heatmaps of
    tokens per expert and per GPU, against the EPLB baseline when the scenario is given."""
    layers = payload.get("layers", [])
    summary = payload.get("summary", {})
    n_gpus = payload.get("n_nodes", 0) * payload.get("gpus_per_node", 0)
    rep = Report(title=f"Expert placement: {payload.get('scenario', '')}",
                 subtitle=f"{payload.get('llm', '')} · {len(layers)} MoE layers × {payload.get('n_logical', '?')} "
                          f"experts · {payload.get('n_nodes')} nodes × {payload.get('gpus_per_node')} GPUs · "
                          f"{payload.get('n_physical', '?')} slots · policy {payload.get('policy')}")
    mean_bal = summary.get("mean_balancedness")
    rep.facts = [("mean balancedness", _fmt(mean_bal)), ("min balancedness", _fmt(summary.get("min_balancedness"))),
                 ("cross-node tokens", f"{summary['mean_cross_node_fraction']:.1%}"
                  if summary.get("mean_cross_node_fraction") is not None else "–"),
                 ("solve time", f"{payload.get('total_time_s', 0):.1f} s")]
    baseline = None
    loads = None
    if scenario is not None and payload.get("policy") == "ilp":
        from simcluster.optimize.placement import place_experts
        loads = scenario_expert_loads(scenario)
        s = scenario.search
        hierarchical = s.groups is not None and s.groups % s.nodes == 0 and loads.shape[1] % s.groups == 0
        baseline = place_experts(loads, s.nodes, s.gpus_per_node, s.slots, s.groups,
                                 "eplb-hierarchical" if hierarchical else "eplb-global")
    if mean_bal is not None:
        rep.verdict = (f"Mean balancedness {mean_bal:.3f} (mean over max GPU load; 1 is perfect)"
                       + (f", against {baseline.summary['mean_balancedness']:.3f} for {baseline.policy}"
                          if baseline is not None else "") + "."
                       + (" Per layer the answer came from: " + ", ".join(
                           f"{k} {n}" for k, n in summary["layers_by_policy_used"].items()) + "."
                          if summary.get("layers_by_policy_used") else ""))
    table = pd.DataFrame(layers)
    if baseline is not None and len(table):
        table["EPLB balancedness"] = [r["balancedness"] for r in baseline.layers]
        table["EPLB cross-node"] = [r["cross_node_fraction"] for r in baseline.layers]
    keep = [c for c in ("layer", "policy_used", "balancedness", "EPLB balancedness", "cross_node_fraction",
                        "EPLB cross-node", "max_gpu_load", "status", "gap", "solve_time_s") if c in table]
    rep.sections.append(Section("Per layer", [
        "Balancedness is the mean GPU load over the busiest GPU's (the step waits for the busiest); the "
        "cross-node fraction is the share of routed tokens that leave their node."],
        tables=[scalar_table(table[keep].to_dict("records") if keep else [], "Placement per MoE layer", top=100)]))
    figures = []
    if baseline is not None:
        x = [r["layer"] for r in layers]
        figures.append(Figure("balance", "Balancedness per layer",
                              plots.line_plot({payload["policy"]: (x, [r["balancedness"] for r in layers]),
                                               baseline.policy: (x, [r["balancedness"] for r in baseline.layers])},
                                              "MoE layer", "balancedness")))
        figures.append(Figure("expert_loads", "Tokens routed to each expert, per layer",
                              plots.heatmaps_plot([("tokens per expert", loads, "expert", "MoE layer")], "tokens")))
    panels = [(f"tokens per GPU: {payload.get('policy')}", np.asarray(payload["gpu_loads"]), "GPU", "MoE layer")]
    if baseline is not None:
        panels.insert(0, (f"tokens per GPU: {baseline.policy}", baseline.gpu_loads, "GPU", "MoE layer"))
    if n_gpus and payload.get("gpu_loads"):
        figures.append(Figure("gpu_loads", "Tokens per GPU after placement (flatter is better)",
                              plots.heatmaps_plot(panels, "tokens")))
    rep.sections.append(Section("Expert-load heatmaps", [
        "Left to right: the routing loads being placed and the tokens each GPU receives under each placement; "
        "a hot column is a straggler GPU."], figures=figures))
    rep.sections.append(Section("Assumptions", [
        "Placement balances routed-token counts only: a GPU's MoE time is taken as proportional to the tokens "
        "its experts receive, and cross-node traffic to the tokens leaving their node. No kernel cost model is "
        "involved; the serving and training simulators take the resulting imbalance (moe_imbalance) as input."]))
    return rep


def other_sections(kind: str, payload: dict, scenario=None, **options) -> Report:
    if kind == "gpu_mix":
        return gpu_mix_sections(payload, scenario)
    if kind == "expert_placement":
        return placement_sections(payload, scenario)
    rep = Report(title=f"{kind.replace('_', ' ').capitalize()} plan: {payload.get('scenario', '')}",
                 subtitle=str(payload.get("llm", "")))
    if payload.get("plans"):
        rep.sections.append(Section("Ranked plans", tables=[scalar_table(payload["plans"], "Plans, best first",
                                                                          highlight_first=True)]))
    return rep
