"""Speed and scale of the serving simulator: simulated requests per wall-second and peak memory.

Traces of 10k, 100k and 1M Poisson requests with chat-like (Azure-2023-conversation-like)
lognormal lengths, on 1, 16 and 128 replicas of Llama-3.1-8B on H100 (TP1), at a rate per replica
that keeps the replicas busy but stable. Peak memory is the process's maximum resident set size
(resource.getrusage), measured in a fresh subprocess per case so cases do not inherit each other's
peak. Speed is given per CPU-second (time.process_time) as well as per wall-second: on a shared
machine the wall clock also counts other processes' turns. Run: `python benchmarks/bench_serving.py [--quick] [--profile] [--cost roofline|calibrated]`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

RATE_PER_REPLICA_PER_S = 20.0    # ~85 % of the ~23.5 req/s one H100 replica sustains on these lengths
SIZES = (10_000, 100_000, 1_000_000)
REPLICAS = (1, 16, 128)


def chat_trace(n: int, rate_per_s: float, seed: int = 0):
    """Poisson arrivals; prompt lognormal mean 1000 tokens, output mean 250 (Azure conv 2023-like)."""
    from simcluster.workload import Lengths, Lognormal, poisson
    lengths = Lengths(Lognormal.from_mean_sigma(1000, 0.8, 16, 8000), Lognormal.from_mean_sigma(250, 0.8, 1, 2000))
    return poisson(rate_per_s, n, lengths, seed)


def run_case(n: int, replicas: int, cost: str, profile: bool = False) -> dict:
    from simcluster.cost import cost_model_for
    from simcluster.hardware.gpu import load_gpu
    from simcluster.llm.spec import load_llm
    from simcluster.serving.simulate import ReplicaGroup, simulate_serving

    llm = load_llm("llama-3.1-8b")
    trace = chat_trace(n, RATE_PER_REPLICA_PER_S * replicas)
    group = ReplicaGroup(load_gpu("h100-sxm"), cost_model_for("h100-sxm", cost), replicas)
    start = time.perf_counter()
    cpu_start = time.process_time()
    if profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        result = prof.runcall(simulate_serving, llm, trace, [group])
        pstats.Stats(prof).sort_stats("tottime").print_stats(18)
    else:
        result = simulate_serving(llm, trace, [group])
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    s = result.summary()
    return {"requests": n, "replicas": replicas, "cost_model": cost, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "requests_per_cpu_s": round(n / cpu), "requests_per_wall_s": round(n / wall),
            "iterations": int(s["iterations"]), "iterations_per_cpu_s": round(s["iterations"] / cpu),
            "iterations_per_wall_s": round(s["iterations"] / wall),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "simulated_s": round(result.duration_s, 1), "completed": s["completed"],
            "ttft_s_p50": round(s["ttft_s_p50"], 4), "tpot_s_p50": round(s["tpot_s_p50"], 5),
            "gpu_time_utilisation": round(s["gpu_time_utilisation"], 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="10k requests only")
    p.add_argument("--profile", action="store_true", help="cProfile one 10k-request, 16-replica case")
    p.add_argument("--cost", default="roofline", choices=["roofline", "calibrated"])
    p.add_argument("--case", nargs=2, type=int, metavar=("REQUESTS", "REPLICAS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case[0], args.case[1], args.cost)))
        return 0
    if args.profile:
        print(json.dumps(run_case(10_000, 16, args.cost, profile=True)))
        return 0
    sizes = SIZES[:1] if args.quick else SIZES
    print("| requests | replicas | CPU s | wall s | requests/CPU-s | requests/wall-s | iterations/CPU-s | "
          "peak RSS MiB | simulated s | TTFT p50 s | TPOT p50 s | GPU util |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        for r in REPLICAS:
            out = subprocess.run([sys.executable, __file__, "--case", str(n), str(r), "--cost", args.cost],
                                 capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"| {n} | {r} | {row['cpu_s']} | {row['wall_s']} | {row['requests_per_cpu_s']} | "
                  f"{row['requests_per_wall_s']} | {row['iterations_per_cpu_s']} | "
                  f"{row['peak_rss_mib']} | {row['simulated_s']} | {row['ttft_s_p50']} | {row['tpot_s_p50']} | "
                  f"{row['gpu_time_utilisation']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
