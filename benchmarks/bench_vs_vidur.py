"""simcluster beside the peer simulator Vidur on one scenario: wall time ratio and predictions side by side.

Scenario (both simulators, same request file): Llama-2-7B on one H100 (TP1, one replica),
Poisson arrivals at 2 requests/s (seed 0), prompt and output lengths cycled from the shipped
Azure LLM 2023 conversation sample (prompt clipped to 2048, output to 256 tokens); a vLLM (V0)
scheduler: prefill-first, whole prompts (no chunking), at most 128 sequences and 4096 tokens per
iteration, 16-token KV blocks, 1 % watermark, 90 % of GPU memory; no CPU overhead (Vidur's
default skips it) and CUDA-graph launch gaps for simcluster.

Vidur runs from its GitHub snapshot (see /work/shared/peers/vidur.md): `--vidur-dir` holds the
extracted tree with `.venv/`, `run_vidur.sh N` and `runs.log` (one line per run:
`requests=N wall_s=S rc=0 out=DIR`). With `--run-vidur` missing sizes are run now; without it
the logged runs are read. Without the directory the Vidur columns are skipped.

    python benchmarks/bench_vs_vidur.py [--sizes 1000,10000,100000] [--vidur-dir /work/vidur] [--run-vidur]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
RATE_PER_S = 2.0
VIDUR_COLUMNS = {"arrival_s": "arrived_at", "prompt_tokens": "num_prefill_tokens", "output_tokens": "num_decode_tokens"}
# Hugging Face meta-llama/Llama-2-7b-hf config.json (the model Vidur ships H100 profiles for).
LLAMA2_7B = {"name": "llama-2-7b", "n_layers": 32, "hidden_size": 4096, "n_heads": 32, "n_kv_heads": 32,
             "head_dim": 128, "intermediate_size": 11008, "vocab_size": 32000, "max_position": 4096,
             "ffn_activation": "swiglu", "norm": "rmsnorm", "tie_embeddings": False,
             "sources": ["Hugging Face meta-llama/Llama-2-7b-hf config.json"]}


def write_trace(n: int, path: Path) -> Path:
    """The shared request file, in Vidur's trace-replay columns."""
    conv = pd.read_csv(REPO / "scenarios/traces/azure_llm_2023_conv.csv")
    prompt = conv["ContextTokens"].clip(1, 2048).to_numpy()
    output = conv["GeneratedTokens"].clip(1, 256).to_numpy()
    rng = np.random.default_rng(0)
    arrival = np.cumsum(rng.exponential(1.0 / RATE_PER_S, n))
    idx = np.arange(n) % len(prompt)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"arrived_at": arrival - arrival[0], "num_prefill_tokens": prompt[idx],
                  "num_decode_tokens": output[idx]}).to_csv(path, index=False)
    return path


def run_simcluster(trace_path: Path) -> dict:
    """Whole simulation in this process; returns wall times and predicted latency percentiles."""
    t0 = time.perf_counter()
    from simcluster.cost import cost_model_for
    from simcluster.hardware.gpu import load_gpu
    from simcluster.llm.spec import llm_from_mapping
    from simcluster.serving.batching import Batching
    from simcluster.serving.metrics import request_metrics
    from simcluster.serving.simulate import ReplicaGroup, simulate_serving
    from simcluster.workload.readers import read_table

    llm = llm_from_mapping(LLAMA2_7B, "bench_vs_vidur.LLAMA2_7B")
    trace = read_table(trace_path, VIDUR_COLUMNS)
    batching = Batching(max_num_seqs=128, max_batched_tokens=4096, chunked_prefill=False, order="prefill_first",
                        block_size=16, watermark=0.01)
    group = ReplicaGroup(load_gpu("h100-sxm"), cost_model_for("h100-sxm"), 1, 1, batching=batching,
                         gpu_memory_utilization=0.9, cuda_graphs=True, cpu_overhead_s=0.0)
    t1 = time.perf_counter()
    result = simulate_serving(llm, trace, [group])
    t2 = time.perf_counter()
    m = request_metrics(result.requests)
    return {"setup_s": t1 - t0, "simulate_s": t2 - t1, "unfinished": result.unfinished,
            **latency_stats(m["ttft_s"], m["tpot_s"], m["e2e_s"])}


def latency_stats(ttft, tpot, e2e) -> dict:
    out = {}
    for name, v in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
        v = np.asarray(v, dtype=float)
        v = v[~np.isnan(v)]
        out[f"{name}_mean_s"] = float(v.mean())
        out[f"{name}_p50_s"] = float(np.percentile(v, 50))
        out[f"{name}_p90_s"] = float(np.percentile(v, 90))
    return out


def simcluster_process(trace_path: Path) -> dict:
    """simcluster in a fresh interpreter (imports and cost-model build included), like Vidur's runs."""
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--simcluster-only", str(trace_path)], capture_output=True,
                         text=True, check=True, cwd=REPO)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds are what a loaded, shared host distorts least (wall time also counts waiting for a core).
    result["process_cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def vidur_runs(vidur_dir: Path) -> dict[int, dict]:
    """Logged Vidur runs by request count (the last successful one of each size)."""
    runs = {}
    log = vidur_dir / "runs.log"
    if not log.exists():
        return runs
    for line in log.read_text().splitlines():
        fields = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
        if fields.get("rc") == "0":
            runs[int(fields["requests"])] = {"wall_s": float(fields["wall_s"]), "out": vidur_dir / fields["out"],
                                             "cpu_s": float(fields["cpu_s"]) if "cpu_s" in fields else None,
                                             "load1": fields.get("load1")}
    return runs


def vidur_loop_s(log_path: Path) -> float | None:
    """Seconds between Vidur's 'Starting simulation' and 'Simulation ended' log lines (1 s resolution)."""
    import datetime
    stamps = {}
    if not log_path.exists():
        return None
    for line in log_path.read_text().splitlines():
        for key, marker in (("start", "Starting simulation"), ("end", "Simulation ended")):
            if marker in line:
                stamps[key] = datetime.datetime.strptime(" ".join(line.split()[1:3]), "%m-%d %H:%M:%S")
    if len(stamps) < 2:
        return None
    return (stamps["end"] - stamps["start"]).total_seconds()


def vidur_stats(out_dir: Path) -> dict:
    """Vidur's predicted latencies from its request_metrics.csv (seconds)."""
    rm = pd.read_csv(out_dir / "request_metrics.csv")
    return latency_stats(rm["prefill_e2e_time"], rm["decode_time_execution_plus_preemption_normalized"],
                         rm["request_e2e_time"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--vidur-dir", type=Path, default=Path("/work/vidur"))
    ap.add_argument("--run-vidur", action="store_true", help="run Vidur for sizes its log lacks")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--simcluster-only", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.simcluster_only:
        print(json.dumps(run_simcluster(args.simcluster_only)))
        return 0
    have_vidur = (args.vidur_dir / ".venv").exists()
    trace_dir = args.vidur_dir / "traces" if have_vidur else REPO / "out" / "bench_vs_vidur"
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        trace = trace_dir / f"poisson2_azureconv_{n}.csv"
        if not trace.exists():
            write_trace(n, trace)
        sim = simcluster_process(trace)
        row = {"requests": n, "simcluster_process_s": sim["process_s"], "simcluster_simulate_s": sim["simulate_s"],
               "simcluster_process_cpu_s": sim["process_cpu_s"], "load1": os.getloadavg()[0]}
        row.update({f"simcluster_{k}": v for k, v in sim.items() if k.endswith("_s") and k[:4] in ("ttft", "tpot", "e2e_")})
        runs = vidur_runs(args.vidur_dir) if have_vidur else {}
        if have_vidur and n not in runs and args.run_vidur:
            subprocess.run(["./run_vidur.sh", str(n)], cwd=args.vidur_dir, check=False)
            runs = vidur_runs(args.vidur_dir)
        if n in runs:
            row["vidur_process_s"] = runs[n]["wall_s"]
            row["ratio_process"] = runs[n]["wall_s"] / sim["process_s"]
            if runs[n]["cpu_s"]:
                row["vidur_process_cpu_s"] = runs[n]["cpu_s"]
                row["vidur_load1"] = runs[n]["load1"]
                row["ratio_process_cpu"] = runs[n]["cpu_s"] / sim["process_cpu_s"]
            loop = vidur_loop_s(args.vidur_dir / "logs" / f"vidur_{n}.log")
            if loop is not None:
                row["vidur_loop_s"] = loop
                row["ratio_loop"] = loop / sim["simulate_s"]
            row.update({f"vidur_{k}": v for k, v in vidur_stats(runs[n]["out"]).items()})
        rows.append(row)
        print_row(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def print_row(row: dict) -> None:
    n = row["requests"]
    line = f"{n:>7} requests: simcluster {row['simcluster_process_s']:.2f} s process ({row['simcluster_simulate_s']:.2f} s simulate)"
    if "vidur_process_s" in row:
        line += f"; Vidur {row['vidur_process_s']:.1f} s process"
        if "vidur_loop_s" in row:
            line += f" ({row['vidur_loop_s']:.0f} s event loop)"
        line += f"; ratio {row['ratio_process']:.1f}x process to process"
        if "ratio_loop" in row:
            line += f", {row['ratio_loop']:.1f}x loop to loop"
        if "ratio_process_cpu" in row:
            line += (f", {row['ratio_process_cpu']:.1f}x in CPU seconds ({row['vidur_process_cpu_s']:.1f} / "
                     f"{row['simcluster_process_cpu_s']:.1f}; load {row['vidur_load1']} / {row['load1']:.1f})")
    else:
        line += "; Vidur: no logged run (skipped)"
    print(line)
    for metric in ("ttft", "tpot", "e2e"):
        cells = []
        for stat in ("mean", "p50", "p90"):
            k = f"{metric}_{stat}_s"
            s, v = row.get(f"simcluster_{k}"), row.get(f"vidur_{k}")
            cells.append(f"{stat} {s * 1e3:9.1f}" + (f" / {v * 1e3:9.1f}" if v is not None else ""))
        print(f"    {metric.upper():4s} ms (simcluster / Vidur): " + "  ".join(cells))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
