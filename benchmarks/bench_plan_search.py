"""Speed of the serving plan search: Llama-3.1-70B over six GPU types and 768 candidate plans
(scenarios/plan-llama70b-serving.yaml), on a local pool of 2 worker processes, and how the time
grows with the number of candidates (the same space over 1, 2, 4 and 6 GPU types).

Run: python benchmarks/bench_plan_search.py [--quick] [--workers 2]
Reported: wall seconds, CPU seconds of this process and of its worker processes together (what
the search costs the cores, unaffected by other load on a shared machine), candidates, how many
were simulated, simulations run, and the best plan. Target (issue 6): under 2 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time

from rich.console import Console
from rich.table import Table

from simcluster.commands.inputs import scenario_llm, scenario_trace
from simcluster.optimize.serving_search import ServingSpace, search_serving_plans
from simcluster.optimize.sweep import SweepOptions
from simcluster.scenario import load_scenario

SCENARIO = "scenarios/plan-llama70b-serving.yaml"


def cpu_s() -> float:
    """CPU seconds of this process plus its finished children (the pool's workers)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def space_of(scenario) -> ServingSpace:
    q = scenario.search
    return ServingSpace(tuple(q.gpus), tuple(q.tp), tuple(q.pp), tuple(q.ep), tuple(q.max_num_seqs),
                        tuple(q.max_batched_tokens), tuple(q.chunked_prefill), tuple(q.order), tuple(q.disaggregated),
                        q.max_replicas, tuple(q.pd_ratio))


def run(scenario, llm, trace, space: ServingSpace, workers: int) -> dict:
    q = scenario.search
    wall0, cpu0 = time.perf_counter(), cpu_s()
    r = search_serving_plans(llm, trace, scenario.slo.model_dump(), space, q.objective, q.target_rate_per_s,
                             scenario.cost_model, sweep=SweepOptions(workers=workers),
                             capacity_requests=q.capacity_requests, simulate_at_least=q.simulate_at_least,
                             tune_top=q.tune_top)
    best = r.best
    return {"gpu_types": len(space.gpus), "candidates": r.candidates, "simulated_plans": len(r.rows),
            "simulations": r.simulations, "wall_s": time.perf_counter() - wall0, "cpu_s": cpu_s() - cpu0,
            "best": f"{best['replicas']} x {best['plan']} {best['usd_per_hour']:.2f} USD/h" if best else "none"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the full space, no growth series")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    scenario = load_scenario(SCENARIO)
    llm, trace = scenario_llm(scenario), scenario_trace(scenario)
    full = space_of(scenario)
    sizes = [len(full.gpus)] if args.quick else sorted({1, 2, 4, len(full.gpus)})
    rows = [run(scenario, llm, trace, dataclasses.replace(full, gpus=full.gpus[:k]), args.workers) for k in sizes]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title=f"{llm.name} serving plan search, {len(trace)} requests at {trace.rate_per_s:.1f} req/s, "
                    f"{args.workers} workers")
    for c in ("GPU types", "candidates", "simulated plans", "simulations", "wall s", "CPU s", "best"):
        t.add_column(c, justify="left" if c == "best" else "right")
    for r in rows:
        t.add_row(str(r["gpu_types"]), str(r["candidates"]), str(r["simulated_plans"]), str(r["simulations"]),
                  f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", r["best"])
    Console(width=200).print(t)


if __name__ == "__main__":
    main()
