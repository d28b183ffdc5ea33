"""simcluster plan SCENARIO: search deployments and print them ranked, with the dropped ones."""

from __future__ import annotations

import json
import time

from simcluster.commands.inputs import scenario_llm, scenario_trace
from simcluster.optimize.serving_search import search_serving_plans
from simcluster.scenario import ScenarioError, load_scenario


def plan(args) -> int:
    scenario = load_scenario(args.scenario, args.overrides)
    if scenario.search is None:
        raise ScenarioError(f"{args.scenario}: search: required by 'plan' (GPU types and TP degrees to try)")
    llm = scenario_llm(scenario)
    trace = scenario_trace(scenario)
    slo = scenario.slo.model_dump()
    s = scenario.search
    started = time.perf_counter()
    from rich.progress import Progress

    with Progress(transient=True, disable=args.json) as bar:
        task = bar.add_task("simulating candidates", total=len(s.gpus) * len(s.tp) * len(s.max_num_seqs) * len(s.max_batched_tokens))
        result = search_serving_plans(llm, trace, slo, s.gpus, s.tp, s.max_num_seqs, s.max_batched_tokens,
                                      s.max_replicas, scenario.cost_model, progress=lambda c: bar.advance(task))
    elapsed = time.perf_counter() - started
    payload = {"scenario": scenario.name, "llm": llm.name, "requests": len(trace),
               "rate_per_s": trace.rate_per_s, "slo": slo, "plans": result.rows, "pruned": result.pruned,
               "candidates": result.candidates, "simulations": result.simulations, "wall_s": elapsed,
               "best": result.best}
    if args.out:
        import pandas as pd

        from simcluster.report.output import write_results
        write_results(args.out, {"plan.json": payload, "plans.csv": pd.DataFrame(result.rows),
                                 "pruned.csv": pd.DataFrame(result.pruned, columns=["plan", "stage", "reason"])})
    if args.json:
        print(json.dumps(payload, indent=2, default=float))
    else:
        from simcluster.report.tables import console_, print_plans, print_pruned
        console = console_()
        console.print(f"[bold]{scenario.name}[/bold]: {llm.name}, {len(trace)} requests at {trace.rate_per_s:.2f} req/s; "
                      f"SLO p{slo['percentile']:g} TTFT <= {slo['ttft_s']} s, TPOT <= {slo['tpot_s']} s")
        print_plans(result.rows, slo, s.top, console)
        print_pruned(result.pruned, console)
        best = result.best
        console.print(f"{result.candidates} candidates, {len(result.pruned)} dropped, {result.simulations} simulations, "
                      f"{elapsed:.1f} s")
        if best:
            console.print(f"[bold green]best:[/bold green] {best['replicas']} × {best['gpu']} TP{best['tp']} "
                          f"({best['gpus']} GPUs) at {best['usd_per_hour']:.2f} USD/h")
        else:
            console.print("[bold red]no plan meets the SLO[/bold red]")
    return 0 if result.best else 1
