"""simcluster place-experts: replicate and place MoE experts on GPUs (ILP or DeepSeek's EPLB)."""

from __future__ import annotations

import argparse
import json

import numpy as np

EPILOG = """examples:
  simcluster place-experts --loads loads.csv --nodes 2 --gpus 8 --slots 16 --json
  simcluster place-experts --loads loads.csv --nodes 2 --gpus 8 --slots 16 --groups 4 --policy eplb-hierarchical
  simcluster place-experts --generate 58x256 --skew 0.5 --nodes 8 --gpus 64 --slots 320 --groups 8 --time-limit 60

--gpus is the total GPU count (spread evenly over --nodes); --slots the total physical expert slots
(logical experts + redundant replicas), a multiple of --gpus. loads.csv: one row per MoE layer, one
column per logical expert (tokens routed), optional header row.
"""


def add_place_experts_parser(sub) -> None:
    p = sub.add_parser("place-experts", help="replicate and place MoE experts on GPUs", description=__doc__,
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--loads", help="CSV of routed tokens: one row per layer, one column per expert")
    src.add_argument("--generate", metavar="LAYERSxEXPERTS", help="synthetic skewed loads, e.g. 58x256")
    p.add_argument("--skew", type=float, default=0.5, help="with --generate: Zipf exponent of expert popularity")
    p.add_argument("--tokens", type=int, default=8192, help="with --generate: tokens routed per layer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--gpus", type=int, required=True, help="total GPUs")
    p.add_argument("--slots", type=int, required=True, help="total physical expert slots")
    p.add_argument("--groups", type=int, default=None, help="expert groups (hierarchical EPLB keeps a group on a node)")
    p.add_argument("--policy", default="ilp", choices=["ilp", "eplb-hierarchical", "eplb-global"])
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds for the whole ILP (all layers)")
    p.add_argument("--max-steps", type=int, default=None, help="cap ILP improvement steps per layer (reproducible)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", action="store_true")


def _loads(args) -> np.ndarray:
    from simcluster.optimize.expert_loads import generate_loads, read_loads_csv
    if args.loads:
        return read_loads_csv(args.loads)
    try:
        layers, experts = (int(x) for x in args.generate.lower().split("x"))
    except ValueError:
        raise ValueError(f"--generate {args.generate!r}: expected LAYERSxEXPERTS, e.g. 58x256") from None
    return generate_loads(layers, experts, args.tokens, args.skew, args.seed)


def place_experts_command(args) -> int:
    from simcluster.optimize.placement import place_experts
    if args.nodes <= 0 or args.gpus <= 0 or args.gpus % args.nodes:
        raise ValueError(f"--gpus {args.gpus} must be a positive multiple of --nodes {args.nodes}")
    loads = _loads(args)
    result = place_experts(loads, args.nodes, args.gpus // args.nodes, args.slots, args.groups, args.policy,
                           time_limit_s=args.time_limit, workers=args.workers, max_steps_per_layer=args.max_steps)
    if args.json:
        print(json.dumps(result.to_json_dict(), default=float))
        return 0
    from simcluster.report.tables import console_
    from rich.table import Table
    console = console_()
    t = Table(title=f"Expert placement ({args.policy}): {loads.shape[0]} layers × {loads.shape[1]} experts, "
                    f"{args.slots} slots on {args.gpus} GPUs in {args.nodes} nodes")
    for c in ("layer", "policy used", "balancedness", "max GPU load", "cross-node", "status", "gap", "solve s"):
        t.add_column(c, justify="left" if c in ("policy used", "status") else "right")
    for r in result.layers:
        gap = "" if r["gap"] is None else f"{r['gap']:.4f}"
        t.add_row(str(r["layer"]), r["policy_used"], f"{r['balancedness']:.4f}", f"{r['max_gpu_load']:.0f}",
                  f"{r['cross_node_fraction']:.3f}", str(r["status"]), gap, f"{r['solve_time_s']:.2f}")
    console.print(t)
    s = result.summary
    console.print(f"mean balancedness {s['mean_balancedness']:.4f} (min {s['min_balancedness']:.4f}), "
                  f"cross-node fraction {s['mean_cross_node_fraction']:.3f}, {result.total_time_s:.1f} s")
    console.print("placement (phy2log, layer 0): " + " ".join(str(int(x)) for x in result.phy2log[0]))
    return 0
