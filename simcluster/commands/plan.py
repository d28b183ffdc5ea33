"""simcluster plan SCENARIO: search deployments for the scenario's kind, print them ranked with the
dropped ones and why; --out writes plan.json, plans.csv, pruned.csv and a plot."""

from __future__ import annotations

import json

from simcluster.commands.inputs import scenario_llm, scenario_trace
from simcluster.optimize.sweep import SweepOptions
from simcluster.scenario import ScenarioError, load_scenario


def plan(args) -> int:
    scenario = load_scenario(args.scenario, args.overrides)
    if scenario.search is None:
        raise ScenarioError(f"{args.scenario}: search: required by 'plan' (the space of plans to try)")
    sweep = SweepOptions(backend=getattr(args, "backend", "local"), workers=getattr(args, "workers", None),
                         address=getattr(args, "address", None), cache_dir=getattr(args, "cache", None),
                         progress=not args.json)
    handler = {"serving": _serving, "training": _training, "gpu_mix": _gpu_mix,
               "expert_placement": _placement}[scenario.kind]
    with sweep.session():
        payload, files, show, ok = handler(scenario, args, sweep)
    if args.out:
        from simcluster.report.output import write_results
        write_results(args.out, {"plan.json": payload, **files})
        from simcluster.report.html import write_report
        write_report(args.out, payload, scenario, progress=not args.json)   # report.html and report.md
    if args.json:
        print(json.dumps(payload, indent=2, default=_json_default))
    else:
        show()
    return 0 if ok else 1


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _table(rows: list[dict], columns: list[tuple[str, str, str]], title: str, top: int | None = None):
    """A rich table of `rows`: columns are (header, key, format spec)."""
    from rich.table import Table
    t = Table(title=title)
    for header, _, _ in columns:
        t.add_column(header, justify="left" if header in ("plan", "stage", "reason", "option", "bucket", "policy") else "right",
                     no_wrap=header == "plan")
    for r in rows[:top]:
        t.add_row(*[_cell(r.get(key), spec) for _, key, spec in columns])
    return t


def _cell(v, spec: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if spec == "ms":
        return f"{v * 1e3:.1f}"
    return format(v, spec) if spec else str(v)


def _serving(scenario, args, sweep):
    from simcluster.optimize.serving_search import ServingSpace, search_serving_plans
    llm = scenario_llm(scenario)
    trace = scenario_trace(scenario)
    slo = scenario.slo.model_dump()
    s = scenario.search
    objective = getattr(args, "objective", None) or s.objective
    space = ServingSpace(tuple(s.gpus), tuple(s.tp), tuple(s.pp), tuple(s.ep), tuple(s.max_num_seqs),
                         tuple(s.max_batched_tokens), tuple(s.chunked_prefill), tuple(s.order),
                         tuple(s.disaggregated), s.max_replicas, tuple(s.pd_ratio))
    result = search_serving_plans(llm, trace, slo, space, objective, s.target_rate_per_s, scenario.cost_model,
                                  scenario.serving.router if scenario.serving else "least_outstanding", sweep,
                                  s.capacity_requests, s.simulate_at_least, tune_top=s.tune_top)
    q = f"p{slo['percentile']:g}"
    payload = {"scenario": scenario.name, "kind": "serving", "llm": llm.name, "requests": len(trace),
               "rate_per_s": result.target_rate_rps, "slo": slo, "objective": objective, "best": result.best,
               "plans": result.rows, "pareto_front": [r["plan"] for r in result.front], "pruned": result.pruned,
               "candidates": result.candidates, "simulations": result.simulations, "cached": result.cached,
               "wall_s": result.wall_s, "notes": result.notes}
    files = {}
    if args.out:
        import pandas as pd

        from simcluster.report.plots import pareto_png
        files = {"plans.csv": pd.DataFrame(result.rows),
                 "pruned.csv": pd.DataFrame(result.pruned, columns=["plan", "stage", "reason"]),
                 "pareto.png": pareto_png(result.rows, result.front, "usd_per_hour", f"ttft_s_{q}",
                                          title=f"{scenario.name}: cost vs TTFT {q} (plans meeting the SLO on the front)",
                                          x_label="USD/hour", y_label=f"TTFT {q} (ms)", y_scale=1e3)}

    def show():
        from simcluster.report.tables import console_
        console = console_()
        console.print(f"[bold]{scenario.name}[/bold]: {llm.name}, {len(trace)} requests at "
                      f"{result.target_rate_rps:.2f} req/s; SLO {q} TTFT <= {slo['ttft_s']} s, TPOT <= {slo['tpot_s']} s; "
                      f"objective {objective}")
        cols = [("rank", "rank", ""), ("plan", "plan", ""), ("replicas", "replicas", ""), ("GPUs", "gpus", ""),
                ("USD/h", "usd_per_hour", ".2f"),
                ("TTFT p50 ms", "ttft_s_p50", "ms"), (f"TTFT {q} ms", f"ttft_s_{q}", "ms"),
                ("TPOT p50 ms", "tpot_s_p50", "ms"), (f"TPOT {q} ms", f"tpot_s_{q}", "ms"),
                ("req/s", "request_throughput_per_s", ".2f"), ("tok/s out", "output_token_throughput_per_s", ".0f"),
                ("capacity req/s per replica", "capacity_rps", ".2f"),
                ("SLO att.", "slo_attainment", ".1%"), ("meets SLO", "meets_slo", ""), ("Pareto", "pareto", "")]
        if q == "p50":
            cols = [c for i, c in enumerate(cols) if i not in (6, 8)]
        console.print(_table(result.rows, cols, "Serving plans, best first (verified on the whole workload)", s.top))
        if result.pruned:
            console.print(_table(result.pruned, [("plan", "plan", ""), ("stage", "stage", ""), ("reason", "reason", "")],
                                 "Dropped candidates"))
        for note in result.notes:
            console.print(f"note: {note}", markup=False)
        console.print(f"{result.candidates} candidates, {len(result.pruned)} dropped, {result.simulations} simulations "
                      f"({result.cached} results from the cache), {result.wall_s:.1f} s")
        best = result.best
        if best:
            console.print(f"[bold green]best:[/bold green] {best['replicas']} × {best['plan']} ({best['gpus']} GPUs) "
                          f"at {best['usd_per_hour']:.2f} USD/h")
        else:
            console.print("[bold red]no plan meets the SLO[/bold red]")
    return payload, files, show, result.best is not None


def _training(scenario, args, sweep):
    from simcluster.optimize.training_search import TrainingSpace, search_training_plans
    llm = scenario_llm(scenario)
    s = scenario.search
    space = TrainingSpace(s.gpu, s.n_gpus, s.seq_len, s.global_batch, tuple(s.tp), tuple(s.pp) if s.pp else None,
                          tuple(s.cp), tuple(s.ep), tuple(s.micro_batch), tuple(s.virtual_stages),
                          tuple(s.recompute), tuple(s.zero), s.schedule, s.sequence_parallel)
    result = search_training_plans(llm, space, scenario.cost_model, s.simulate_top, sweep)
    payload = {"scenario": scenario.name, "kind": "training", "llm": llm.name, "gpu": s.gpu, "n_gpus": s.n_gpus,
               "global_batch": s.global_batch, "seq_len": s.seq_len, "best": result.best, "plans": result.rows,
               "pruned": result.pruned, "candidates": result.candidates, "simulated": result.simulated,
               "cached": result.cached, "wall_s": result.wall_s, "notes": result.notes}
    files = {}
    if args.out:
        import pandas as pd

        from simcluster.report.plots import stacked_bar_plot
        top = [r for r in result.rows if "sim_step_s" in r]
        files = {"plans.csv": pd.DataFrame(result.rows),
                 "pruned.csv": pd.DataFrame(result.pruned, columns=["plan", "stage", "reason"])}
        if top:
            files["plans.png"] = stacked_bar_plot(
                [r["plan"] for r in top],
                {"compute": [r["sim_compute_s"] for r in top], "exposed comm": [r["sim_exposed_comm_s"] for r in top],
                 "bubble": [r["sim_bubble_s"] for r in top], "optimizer": [r["sim_optimizer_s"] for r in top]},
                "simulated step time (s)")

    def show():
        from collections import Counter

        from simcluster.report.tables import console_
        console = console_()
        console.print(f"[bold]{scenario.name}[/bold]: {llm.name} on {s.n_gpus} × {s.gpu}, global batch {s.global_batch} "
                      f"× {s.seq_len} tokens")
        cols = [("rank", "rank", ""), ("plan", "plan", ""), ("memory GiB", "peak_memory_gib", ".1f"),
                ("est. step s", "est_step_s", ".3f"), ("est. MFU", "est_mfu", ".1%"),
                ("sim. step s", "sim_step_s", ".3f"), ("sim. MFU", "sim_mfu", ".1%"),
                ("est. error", "estimate_error", "+.1%")]
        console.print(_table(result.rows, cols, "Training plans: the best simulated in full, the rest by estimate", s.top))
        counts = Counter(p["stage"] for p in result.pruned)
        console.print(f"{result.candidates} candidates: {len(result.rows)} fit in memory, "
                      + ", ".join(f"{n} dropped for {stage}" for stage, n in sorted(counts.items()))
                      + f" (reasons in pruned.csv / --json); {result.simulated} simulated, {result.wall_s:.1f} s")
        for note in result.notes:
            console.print(f"note: {note}", markup=False)
        if result.best:
            b = result.best
            console.print(f"[bold green]best:[/bold green] {b['plan']}: {b.get('sim_step_s', b['est_step_s']):.3f} s "
                          f"per step, MFU {b.get('sim_mfu', b['est_mfu']):.1%}")
    return payload, files, show, result.best is not None


def _gpu_mix(scenario, args, sweep):
    from simcluster.optimize.mix_plan import plan_gpu_mix
    from simcluster.optimize.serving_search import ServingSpace
    llm = scenario_llm(scenario)
    trace = scenario_trace(scenario)
    slo = scenario.slo.model_dump()
    s = scenario.search
    space = ServingSpace(tuple(s.gpus), tuple(s.tp), max_num_seqs=(s.max_num_seqs,),
                         max_batched_tokens=(s.max_batched_tokens,), max_replicas=10**6)
    plan_ = plan_gpu_mix(llm, trace, slo, space, s.bucket_edges_tokens, s.gpus_available or None,
                         s.budget_usd_per_hour, scenario.cost_model, s.options_per_gpu, s.capacity_requests,
                         s.time_limit_s, scenario.serving.router if scenario.serving else "least_outstanding", sweep)
    mix = plan_.mix
    program = None if mix is None else {
        "status": mix.status, "objective_usd_per_hour": mix.objective_usd_per_hour, "served_rps": mix.served_rps,
        "gap": mix.gap, "solve_time_s": mix.solve_time_s, "counts": {k: v for k, v in mix.counts.items() if v},
        "gpus_per_type": mix.gpus_per_type, "assignment": mix.assignment,
        "infeasible_constraints": mix.infeasible_constraints}
    ok = bool(mix is not None and mix.status in ("optimal", "feasible") and plan_.verification.get("meets_slo"))
    payload = {"scenario": scenario.name, "kind": "gpu_mix", "llm": llm.name, "requests": len(trace),
               "demand_rps": plan_.demand_rps, "slo": slo, "program": program, "verification": plan_.verification,
               "capacity_table": plan_.capacity_table, "pruned": plan_.pruned, "simulations": plan_.simulations,
               "wall_s": plan_.wall_s, "notes": plan_.notes}
    files = {}
    if args.out:
        import pandas as pd
        files = {"capacities.csv": pd.DataFrame(plan_.capacity_table),
                 "pruned.csv": pd.DataFrame(plan_.pruned, columns=["plan", "stage", "reason", "bucket"])}
        if mix is not None:
            files["assignment.csv"] = pd.DataFrame(mix.assignment)

    def show():
        from simcluster.report.tables import console_
        console = console_()
        console.print(f"[bold]{scenario.name}[/bold]: {llm.name}, demand "
                      + ", ".join(f"{b} {r:.2f} req/s" for b, r in plan_.demand_rps.items()))
        console.print(_table(plan_.capacity_table, [("option", "option", ""), ("bucket", "bucket", ""),
                                                   ("USD/h", "usd_per_hour", ".2f"), ("capacity req/s per replica", "capacity_rps", ".2f")],
                             "Simulated capacity per instance and bucket"))
        if program:
            console.print(f"program: {program['status']}, {program['objective_usd_per_hour']:.2f} USD/h, gap "
                          f"{program['gap'] if program['gap'] is not None else '-'}, {program['solve_time_s']:.2f} s")
            console.print(_table(mix.assignment, [("bucket", "bucket", ""), ("option", "option", ""),
                                                  ("share", "share", ".1%"), ("req/s", "rate_rps", ".2f")],
                                 "Who serves which bucket"))
            for option, n in program["counts"].items():
                console.print(f"  {n} × {option}")
            for reason in program["infeasible_constraints"]:
                console.print(f"  infeasible: {reason}", markup=False)
        v = plan_.verification
        if v:
            console.print(f"verification on the whole workload: {'meets' if v['meets_slo'] else 'MISSES'} the SLO "
                          f"({v['slo_attainment']:.1%} of requests within it), {v['gpus']} GPUs, {v['usd_per_hour']:.2f} USD/h")
        for note in plan_.notes:
            console.print(f"note: {note}", markup=False)
    return payload, files, show, ok


def _placement(scenario, args, sweep):
    from pathlib import Path

    from simcluster.optimize.expert_loads import generate_loads, read_loads_csv
    from simcluster.optimize.placement import place_experts
    llm = scenario_llm(scenario)
    s = scenario.search
    if s.loads:
        path = Path(s.loads) if Path(s.loads).is_absolute() else Path(scenario.base_dir) / s.loads
        loads = read_loads_csv(path)
    else:
        if llm.moe is None:
            raise ScenarioError(f"{args.scenario}: llm: {llm.name} is dense; expert placement needs a mixture-of-experts LLM")
        layers = sum(1 for i in range(llm.n_layers) if llm.is_moe_layer(i))
        loads = generate_loads(layers, llm.moe.n_experts, s.generate_tokens, s.generate_skew, scenario.seed)
    result = place_experts(loads, s.nodes, s.gpus_per_node, s.slots, s.groups, s.policy, s.time_limit_s,
                           workers=sweep.parallelism)
    payload = {"scenario": scenario.name, "kind": "expert_placement", "llm": llm.name, **result.to_json_dict()}
    files = {}
    if args.out:
        import pandas as pd
        files = {"layers.csv": pd.DataFrame(result.layers)}

    def show():
        from simcluster.report.tables import console_
        console = console_()
        console.print(f"[bold]{scenario.name}[/bold]: {loads.shape[0]} MoE layers × {loads.shape[1]} experts on "
                      f"{s.nodes} × {s.gpus_per_node} GPUs, {s.slots} slots, policy {s.policy}")
        cols = [("layer", "layer", ""), ("policy", "policy_used", ""), ("balancedness", "balancedness", ".3f"),
                ("cross-node", "cross_node_fraction", ".1%"), ("status", "status", ""), ("gap", "gap", ".2%"),
                ("solve s", "solve_time_s", ".2f")]
        console.print(_table(result.layers, cols, "Expert placement per layer"))
        console.print(", ".join(f"{k}: {v:.4g}" if isinstance(v, float) else f"{k}: {v}" for k, v in result.summary.items()),
                      markup=False)
    return payload, files, show, True
