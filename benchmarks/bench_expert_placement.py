"""Expert placement at DeepSeek-V3 scale: the program versus greedy EPLB (both policies).

DeepSeek-V3 has 58 MoE layers of 256 routed experts in 8 groups; served on 8 nodes x 8 GPUs with
32 redundant experts that would be 288 slots = 4.5 per GPU, so this uses 320 slots (5 per GPU,
64 redundant). Loads are synthetic (expert_loads.generate_loads, Zipf exponent --skew).

    python benchmarks/bench_expert_placement.py [--time-limit-s 55] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import numpy as np

from simcluster.optimize.expert_loads import generate_loads
from simcluster.optimize.placement import place_experts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=58)
    parser.add_argument("--experts", type=int, default=256)
    parser.add_argument("--nodes", type=int, default=8)
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--slots", type=int, default=320)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=4096 * 8, help="routed tokens per layer")
    parser.add_argument("--skew", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit-s", type=float, default=55.0)  # leaves room within the 60 s target
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None,
                        help="neighbourhood steps per layer (with a large --time-limit-s: a result"
                             " independent of machine load)")
    args = parser.parse_args(argv)

    loads = generate_loads(args.layers, args.experts, args.tokens, args.skew, args.seed)
    hot = float(np.mean(loads.max(axis=1) / loads.mean(axis=1)))
    print(f"{args.layers} layers x {args.experts} experts, {args.nodes}x{args.gpus_per_node} GPUs,"
          f" {args.slots} slots, skew {args.skew} (hottest expert {hot:.1f}x mean),"
          f" {args.workers} workers on {os.cpu_count()} cores")
    rows = []
    for policy in ("eplb-hierarchical", "eplb-global", "ilp"):
        started, cpu_started = time.perf_counter(), _cpu_s()
        result = place_experts(loads, args.nodes, args.gpus_per_node, args.slots, args.groups,
                               policy=policy, time_limit_s=args.time_limit_s, workers=args.workers,
                               max_steps_per_layer=args.max_steps)
        wall_s, cpu_s = time.perf_counter() - started, _cpu_s() - cpu_started
        summary = result.summary
        rows.append((policy, wall_s, summary))
        gap = "-" if summary["mean_gap"] is None else f"{summary['mean_gap']:.4f}"
        print(f"{policy:18s} total {wall_s:7.2f} s (cpu {cpu_s:6.1f} s)  mean balancedness {summary['mean_balancedness']:.4f}"
              f"  min {summary['min_balancedness']:.4f}  cross-node {summary['mean_cross_node_fraction']:.3f}"
              f"  mean gap {gap}")
        if policy == "ilp":
            iterations = [r["iterations"] for r in result.layers]
            print(f"{'':18s} layers by result: {summary['layers_by_policy_used']};"
                  f" max gap {summary['max_gap']:.4f}; neighbourhood steps per layer"
                  f" {np.mean(iterations):.1f}; statuses"
                  f" {sorted(set(r['status'] for r in result.layers))}")
    load_1min = os.getloadavg()[0]
    print(f"load average during the run: {load_1min:.1f} on {os.cpu_count()} cores")
    return 0


def _cpu_s() -> float:
    """CPU seconds of this process and its finished children (the layer workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    sys.exit(main())
