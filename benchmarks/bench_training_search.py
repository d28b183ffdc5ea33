"""Speed of the training plan search: Llama-3.1-405B on 1,024 H100s, global batch 1,024 × 8k
tokens (scenarios/plan-llama405b-training.yaml), with the best 5 plans simulated in full on 2
worker processes; and how the time grows with the GPU count (64 to 1,024).

Run: python benchmarks/bench_training_search.py [--quick] [--workers 2]
Reported: candidates, plans that fit in memory, wall and CPU seconds (this process and its
workers), the analytic stage alone, and the best plan. Target (issue 6): under 2 minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import time

from rich.console import Console
from rich.table import Table

from simcluster.commands.inputs import scenario_llm
from simcluster.optimize.sweep import SweepOptions
from simcluster.optimize.training_search import TrainingSpace, search_training_plans
from simcluster.scenario import load_scenario

SCENARIO = "scenarios/plan-llama405b-training.yaml"


def cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only 1,024 GPUs")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    scenario = load_scenario(SCENARIO)
    llm = scenario_llm(scenario)
    s = scenario.search
    base = TrainingSpace(s.gpu, s.n_gpus, s.seq_len, s.global_batch, tuple(s.tp), tuple(s.pp) if s.pp else None,
                         tuple(s.cp), tuple(s.ep), tuple(s.micro_batch), tuple(s.virtual_stages), tuple(s.recompute),
                         tuple(s.zero), s.schedule, s.sequence_parallel)
    rows = []
    for n in ([1024] if args.quick else [128, 256, 512, 1024]):
        space = dataclasses.replace(base, n_gpus=n)
        wall0, cpu0 = time.perf_counter(), cpu_s()
        r = search_training_plans(llm, space, scenario.cost_model, s.simulate_top, SweepOptions(workers=args.workers))
        b = r.best
        rows.append({"n_gpus": n, "candidates": r.candidates, "fit": len(r.rows), "simulated": r.simulated,
                     "estimate_s": r.estimate_wall_s, "wall_s": time.perf_counter() - wall0, "cpu_s": cpu_s() - cpu0,
                     "best": f"{b['plan']}: {b.get('sim_step_s', b['est_step_s']):.2f} s/step, MFU "
                             f"{b.get('sim_mfu', b['est_mfu']):.1%}" if b else "none",
                     "estimate_error_top": [round(x["estimate_error"], 4) for x in r.rows if "estimate_error" in x]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    t = Table(title=f"{llm.name} training plan search on {s.gpu}, global batch {s.global_batch} x {s.seq_len}, "
                    f"{args.workers} workers")
    for c in ("GPUs", "candidates", "fit in memory", "simulated", "analytic s", "wall s", "CPU s", "best"):
        t.add_column(c, justify="left" if c == "best" else "right")
    for r in rows:
        t.add_row(str(r["n_gpus"]), str(r["candidates"]), str(r["fit"]), str(r["simulated"]), f"{r['estimate_s']:.1f}",
                  f"{r['wall_s']:.1f}", f"{r['cpu_s']:.1f}", r["best"])
    Console(width=200).print(t)


if __name__ == "__main__":
    main()
