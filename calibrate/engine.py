"""Engine validation run: serve an Azure-trace slice through transformers' continuous batching on one GPU.

    python -m calibrate.engine --out DIR [--shape llama-3.1-8b] [--rates auto|R1,R2] [--budget-s 420]
        [--config eager|graphs_async|...] [--select C1,C2,...] [--prefix engine_] [--pack FILE.tgz]

A Llama-shaped model with random bf16 weights (no download) serves, in order:
  fit_*   short probes at fixed concurrency (decode at 1 to 48 sequences over 0.1k to 50k KV
          tokens; lone 2048-token prefills); the simulator fits the engine's per-iteration
          overhead on these only;
  warm_*  with --prewarm, on each rate's fresh engine before the rate: a burst of every padded prompt
          length (`warmup_burst`), so the CUDA graphs the rate needs are captured before it is
          measured, as vLLM captures its graphs at start-up; graphs held before and after are logged;
  rate_*  slices of scenarios/traces/azure_llm_2023_conv.csv at two arrival rates, requests
          submitted by a thread at their arrival times; these are the validation points;
  late_*  the fit probes again after the rates, to show whether the engine's speed held.
Each group runs on a fresh engine (a new manager, scheduler and KV cache over the same weights),
and, as production engines do (vLLM freezes its heap after start-up), the Python heap is collected
and frozen before each phase (`--gc freeze`), so the garbage collector does not walk the
model's and the libraries' objects in the middle of an iteration; torch's CPU threads are set to
one, as vLLM sets them for its workers.
With --select, short probes first pick the engine configuration (calibrate/engine_select.py: CUDA
graphs, async batching, torch.compile) and everything above runs with the chosen one.
Writes to DIR (file names start with --prefix): engine_trace_<rate>.csv (what was served),
engine_requests_<rate>.csv and engine_requests_fit.csv (per request: arrival, first token, finish,
tokens), engine_requests_warm_<rate>.csv (the warm-up burst, its own phase, times from its start),
engine_iterations.csv (per engine iteration: wall times of its CPU and GPU parts and its batch),
engine_select.csv (with --select), engine_provenance.yaml; after every phase, so a run cut short
keeps what it measured, and packed into --pack as well.
"""

from __future__ import annotations

import argparse
import csv
import gc
import math
import os
import sys
import tarfile
import time
import traceback
from pathlib import Path

import numpy as np

if __package__ in (None, ""):   # run as `python calibrate/engine.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from calibrate.engine_run import ITERATION_COLUMNS, Engine, EngineSettings, IterationLog
from calibrate.engine_select import CONFIGS, select, select_rows, settings_for
from calibrate.engine_trace import engine_trace, rate_tag, write_trace

REPO = Path(__file__).resolve().parent.parent
SHAPES = {
    # Hugging Face meta-llama/Llama-3.1-8B config.json (rope scaling left out: it changes no cost).
    "llama-3.1-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=14336, vocab_size=128256, head_dim=128, rope_theta=500000.0,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=False),
    # Hugging Face meta-llama/Llama-3.2-1B config.json.
    "llama-3.2-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                         intermediate_size=8192, vocab_size=128256, head_dim=64, rope_theta=500000.0,
                         max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True),
    # For a CPU smoke run of the harness only.
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=256, vocab_size=1000, head_dim=32, max_position_embeddings=4096,
                 tie_word_embeddings=False),
}


def introspect(log) -> dict:
    """What this transformers offers for continuous batching; printed so a run explains itself."""
    import torch
    import transformers
    facts = {"transformers": transformers.__version__, "torch": torch.__version__}
    try:
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        facts["attention_functions"] = sorted(ALL_ATTENTION_FUNCTIONS.keys())
    except ImportError:
        facts["attention_functions"] = []
    try:
        import dataclasses

        from transformers.generation import ContinuousBatchingConfig
        facts["cb_config_fields"] = [f.name for f in dataclasses.fields(ContinuousBatchingConfig)]
    except (ImportError, TypeError):
        facts["cb_config_fields"] = []
    from transformers import LlamaForCausalLM
    facts["entry_points"] = [n for n in ("generate_batch", "init_continuous_batching",
                                         "continuous_batching_context_manager") if hasattr(LlamaForCausalLM, n)]
    for k, v in facts.items():
        log(f"introspect: {k}: {v}")
    return facts


def build_model(shape: str, device: str, attn: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(**SHAPES[shape])
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        try:
            model = LlamaForCausalLM._from_config(cfg, attn_implementation=attn, dtype=dtype)
        except TypeError:
            model = LlamaForCausalLM._from_config(cfg, attn_implementation=attn, torch_dtype=dtype)
    return model.eval()


def prompt_ids(rng: np.random.Generator, lengths, vocab: int) -> list[list[int]]:
    # Random ids: no two prompts share a prefix block, so prefix caching could not help anyway.
    return [rng.integers(10, vocab, size=int(n)).tolist() for n in lengths]


def _write_rows(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def host_facts() -> str:
    """Load, CPU frequency and thread count: what could make host time per iteration drift."""
    import torch
    try:
        load = open("/proc/loadavg").read().split()[:3]
    except OSError:
        load = []
    mhz = []
    try:
        mhz = [float(line.split(":")[1]) for line in open("/proc/cpuinfo") if line.startswith("cpu MHz")]
    except (OSError, ValueError, IndexError):
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    freq = f"{np.median(mhz):.0f} MHz median of {len(mhz)}" if mhz else "n/a"
    return f"load {' '.join(load)}; cpus {cpus}; torch threads {torch.get_num_threads()}; cpu freq {freq}"


def settle(args, log) -> None:
    """Collect, then (with --gc freeze) move every live object to the permanent generation."""
    gc.collect()
    if args.gc == "freeze":
        gc.freeze()
    log(f"host: {host_facts()}; gc frozen {gc.get_freeze_count()}")


def fit_phases(engine: Engine, rng, vocab: int, max_prompt: int, out: Path, log, prefix: str = "fit",
               settle_fn=lambda: None) -> tuple[list[dict], dict]:
    """Probes at fixed concurrency; returns their request rows and decode tokens/s at 32 sequences
    (sizes the trace rates). The KV range covers the rate phases' (up to ~50k tokens at 1.15/s)."""
    long = min(1024, max_prompt)
    probes = [("b1", 1, 64, 48, 0.0), ("b8", 8, 256, 48, 0.0), ("b32", 32, 256, 48, 0.0),
              ("b16_kv16k", 16, long, 32, 0.0), ("b48_kv48k", 48, long, 32, 0.0),
              ("prefill", 4, max_prompt, 4, 1.0)]
    rows, stats = [], {}
    for probe, n, prompt, output, gap_s in probes:
        name = f"{prefix}_{probe}"
        settle_fn()
        t = time.perf_counter()
        recs, start = engine.serve(name, np.arange(n) * gap_s, prompt_ids(rng, [prompt] * n, vocab),
                                   [output] * n, deadline_s=120)
        for r in recs:
            r["phase"] = name
        rows += recs
        done = [r for r in recs if not math.isnan(r["finish_s"])]
        if probe == "b32" and done:
            span = max(r["finish_s"] for r in done) - min(r["first_token_s"] for r in done)
            stats["decode_tokens_per_s_b32"] = (output - 1) * len(done) / max(span, 1e-9)
        log(f"fit: {name}: {time.perf_counter() - t:.1f} s")
    return rows, stats


# The warm-up burst (--prewarm): prompts of every length the rates can meet, in steps of the engine's
# query padding, so the padded batch shapes they need are captured before the rate is measured, as
# vLLM captures its graphs at start-up. A graph's key is (padded query tokens, cached KV tokens
# padded to 16384, longest sequence as a power of two >= 1024) and async batching keeps one graph
# set per IO buffer pair, used in turn (simcluster/serving/graphs.py). Each sweep submits lengths
# 64k - 16 (room for up to 16 decodes in the same padded query size), one after another, over a
# background of long requests that sets the cached-KV and longest-sequence parts of the key:
#   (background requests, their prompt, their output, longest sweep prompt, copies up to 512, copies above)
WARM_SWEEPS = (
    (0, 0, 0, 1024, 2, 2),         # idle engine: cached KV < 16384, longest 1024 (2048 above 1024 tokens)
    (1, 1400, 256, 2048, 3, 2),    # one long decode: longest 2048 for every query size (the rates' commonest)
    (12, 1400, 120, 1280, 1, 1),   # 12 long decodes: cached KV past 16384 (the busier rates)
)
WARM_STEP_TOKENS = 64         # transformers CB's default q_padding_interval_size
WARM_SLACK_TOKENS = 16
# On an idle engine a request takes as many iterations as it has output tokens, so copies with 5
# then 4 output tokens start on alternate IO pairs; over a background, which pair a copy meets is
# left to its arrival time.
WARM_OUTPUTS = (5, 4)
WARM_GAP_S = (0.3, 0.1)       # between sweep prompts on an idle engine (the copy before has finished) / loaded
WARM_GAP_S_PER_TOKEN = 0.15 / 2048   # a 2048-token prefill and its capture take ~0.25 s on the H100


def warmup_burst(max_prompt: int, max_output: int, sweeps=WARM_SWEEPS) -> tuple[np.ndarray, list[int], list[int]]:
    """Arrival times (s), prompt lengths and output lengths of the warm-up burst, in arrival order.

    >>> a, p, o = warmup_burst(2048, 256)
    >>> len(p), p[:6], o[:6], round(float(a[-1]), 1)
    (137, [48, 48, 112, 112, 176, 176], [5, 4, 5, 4, 5, 4], 29.5)
    """
    arrival, prompts, outputs = [], [], []
    t = 0.0
    for n_bg, bg_prompt, bg_output, top, copies_small, copies in sweeps:
        if n_bg:
            arrival += [t + 0.01 * i for i in range(n_bg)]
            prompts += [min(bg_prompt, max_prompt)] * n_bg
            outputs += [min(bg_output, max_output)] * n_bg
            t += 1.0                 # the background's prefills are done
        for n in range(WARM_STEP_TOKENS, min(top, max_prompt) + 1, WARM_STEP_TOKENS):
            for c in range(copies_small if n <= 512 else copies):
                arrival.append(t)
                prompts.append(n - WARM_SLACK_TOKENS)
                outputs.append(WARM_OUTPUTS[c % len(WARM_OUTPUTS)])
                t += WARM_GAP_S[bool(n_bg)] + WARM_GAP_S_PER_TOKEN * n
        t += 1.0 if n_bg else 0.5
    return np.asarray(arrival), prompts, outputs


def graphs_captured(counts: dict) -> int:
    """CUDA graphs an engine holds, summed over its graph sets (Engine.graph_counts keys `...graphs._storage`)."""
    return sum(v for k, v in counts.items() if k.endswith("graphs._storage") and isinstance(v, int))


def choose_rates(arg: str, stats: dict, mean_output: float, log) -> list[float]:
    """'auto', or comma-separated requests/s where 'capNN' is NN % of the capacity estimate."""
    # Capacity in requests/s if decode ran at the 32-sequence rate (prefill left out: an upper bound).
    cap = stats.get("decode_tokens_per_s_b32", 0.0) / max(mean_output, 1.0)
    items = ["cap25", "cap60"] if arg == "auto" else arg.split(",")
    rates = [max(0.05, round(float(x[3:]) / 100 * cap * 20) / 20) if x.startswith("cap") else float(x)
             for x in items]
    log(f"rates: capacity estimate {cap:.2f} req/s; {arg} -> {rates}")
    return rates


def serve_phases(model, settings: EngineSettings, args, iterations: IterationLog, run: dict, wall0: float,
                 log, checkpoint=lambda: None) -> None:
    """Fit probes, the rates, the late probes, each group on a fresh engine; fills `run` as it goes and
    calls `checkpoint` after each group."""
    def fresh_engine(what: str) -> Engine:
        e = Engine(model, settings, log, iterations)
        run["warmup_s"] = e.warmup_s
        log(f"engine for {what} started; warmup {e.warmup_s:.1f} s; resolved {settings.resolved}")
        return e

    def settle_fn():
        settle(args, log)

    rng = np.random.default_rng(args.seed)
    # The probes' prompts come from their own generator so the rate phases' prompts stay those of a
    # run without them (same seed, same trace rows, same random ids).
    probe_rng = np.random.default_rng(args.seed + 1)
    vocab = SHAPES[args.shape]["vocab_size"]
    engine = fresh_engine("fit probes")
    fit_rows, stats = fit_phases(engine, probe_rng, vocab, args.max_prompt, args.out, log, "fit", settle_fn)
    run["fit_rows"], run["stats"] = fit_rows, stats
    engine.stop()
    checkpoint()
    probe = engine_trace(args.trace, 1.0, 400, 0, args.max_prompt, args.max_output)
    rates = choose_rates(args.rates, stats, float(probe.output_tokens.mean()), log)
    offset = 0
    late_s = 40.0 if args.late_probes else 0.0    # what the late probes take, kept out of the rates' budget
    warm_s = 40.0 if args.prewarm else 0.0        # what one warm-up burst takes (~37 s on the H100)
    warm_rng = np.random.default_rng(args.seed + 3)   # the rates' prompts stay those of a run without warm-ups
    for rate in rates:
        left = args.budget_s - late_s - warm_s - (time.perf_counter() - wall0)
        n = int(min(args.max_requests, max(args.min_requests, rate * args.phase_s), rate * args.max_span_s))
        n = int(min(n, rate * (left - args.tail_s)))
        if n < 10:
            log(f"rate {rate}: skipped, {left:.0f} s of budget left")
            continue
        trace = engine_trace(args.trace, rate, n, offset, args.max_prompt, args.max_output)
        offset += n
        tag = rate_tag(rate)
        write_trace(trace, args.out / f"{args.prefix}trace_{tag}.csv")
        engine = fresh_engine(f"rate {rate}")
        warm = {}
        if args.prewarm:
            held0 = graphs_captured(engine.graph_counts())
            settle_fn()
            w_arrival, w_prompts, w_outputs = warmup_burst(args.max_prompt, args.max_output)
            w_recs, w_start = engine.serve(f"warm_{tag}", w_arrival, prompt_ids(warm_rng, w_prompts, vocab), w_outputs,
                                           deadline_s=float(w_arrival[-1]) + 25.0)
            for r in w_recs:
                r["phase"] = f"warm_{tag}"
            _write_rows(args.out / f"{args.prefix}requests_warm_{tag}.csv", w_recs)
            held1 = graphs_captured(engine.graph_counts())
            w_done = sum(1 for r in w_recs if not math.isnan(r["finish_s"]))
            warm = {"warm_requests": len(w_recs), "warm_finished": w_done,
                    "graphs_after_engine_start": held0, "graphs_after_warmup": held1}
            log(f"rate {rate}: warm-up {warm['warm_finished']}/{len(w_recs)} finished; graphs held: {held0} after the "
                f"engine's start, {held1} after the warm-up ({held1 - held0} captured), before the rate")
        settle_fn()
        recs, start = engine.serve(f"rate_{tag}", trace.arrival_s, prompt_ids(rng, trace.prompt_tokens, vocab),
                                   trace.output_tokens, deadline_s=float(trace.arrival_s[-1]) + max(30.0, left * 0.25))
        _write_rows(args.out / f"{args.prefix}requests_{tag}.csv", recs)
        if args.prewarm:   # the rate's clock starts this long after the warm-up's (for a simulator that replays both)
            warm["rate_start_after_warm_start_s"] = start - w_start
        run["served"].append({"rate_per_s": rate, "requests": n, "trace_rows": [offset - n, offset],
                              "finished": sum(1 for r in recs if not math.isnan(r["finish_s"])),
                              "graphs_held": engine.graph_counts(), **warm})
        held2 = graphs_captured(run["served"][-1]["graphs_held"])
        if args.prewarm:
            run["served"][-1]["graphs_captured_during_rate"] = held2 - warm["graphs_after_warmup"]
            log(f"rate {rate}: graphs held {held2} after the rate ({held2 - warm['graphs_after_warmup']} captured "
                f"during it)")
        log(f"rate {rate}: graphs held after the phase {run['served'][-1]['graphs_held']}")
        if not engine.alive():
            log("engine: the generation thread died; see the log above")
        engine.stop()
        checkpoint()
    if args.late_probes and args.budget_s - (time.perf_counter() - wall0) > late_s:
        engine = fresh_engine("late probes")
        late_rows, _ = fit_phases(engine, probe_rng, vocab, args.max_prompt, args.out, log, "late", settle_fn)
        run["fit_rows"] = fit_rows + late_rows
        engine.stop()
        checkpoint()


def write_outputs(args, iterations: IterationLog, run: dict, facts: dict, settings: EngineSettings,
                  timings: dict, wall0: float) -> int:
    """Write the request, iteration, select and provenance files from what `run` holds so far and pack
    them (with anything else in DIR, such as the GPU monitor) into --pack; returns the iteration count."""
    if run["fit_rows"]:
        _write_rows(args.out / f"{args.prefix}requests_fit.csv", run["fit_rows"])
    if run["select"]:
        _write_rows(args.out / f"{args.prefix}select.csv", select_rows(run["select"]))
    iterations.resolve_gpu_times()
    rows = sorted(iterations.rows, key=lambda r: r[1])
    with open(args.out / f"{args.prefix}iterations.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ITERATION_COLUMNS)
        for r in rows:
            w.writerow([r[0], f"{r[1] - wall0:.6f}", *(f"{x:.6f}" for x in r[2:5]), *r[5:11],
                        f"{r[11]:.6f}", f"{r[12]:.6f}", r[13], f"{r[14]:.6f}", f"{r[15]:.6f}"])
    from calibrate.engine_provenance import write_provenance
    write_provenance(args.out / f"{args.prefix}provenance.yaml", facts, settings, args, run["served"], run["stats"],
                     {**timings, "warmup_s": run["warmup_s"], "total_wall_s": time.perf_counter() - wall0}, sys.argv,
                     engine_config=run["config"], select=select_rows(run["select"]))
    if args.pack:
        tmp = args.pack.with_name(args.pack.name + ".part")
        with tarfile.open(tmp, "w:gz") as tar:
            for f in sorted(args.out.iterdir()):
                if f.is_file():
                    tar.add(f, arcname=f.name)
        tmp.replace(args.pack)
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m calibrate.engine", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--shape", default="llama-3.1-8b", choices=sorted(SHAPES))
    ap.add_argument("--trace", default=str(REPO / "scenarios/traces/azure_llm_2023_conv.csv"))
    ap.add_argument("--rates", default="auto",
                    help="'auto' or comma-separated requests/s; 'capNN': NN %% of the capacity the b32 probe implies")
    ap.add_argument("--phase-s", type=float, default=100.0, help="arrival span per rate (sets request counts)")
    ap.add_argument("--max-span-s", type=float, default=140.0, help="longest arrival span of one rate")
    ap.add_argument("--min-requests", type=int, default=100)
    ap.add_argument("--max-requests", type=int, default=300)
    ap.add_argument("--max-prompt", type=int, default=2048)
    ap.add_argument("--max-output", type=int, default=256)
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting phases past this wall time")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--gc", default="freeze", choices=("freeze", "default"),
                    help="freeze the Python heap before each phase (as vLLM does after start-up) or leave GC as is")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="CPU threads for torch ops; 1 as vLLM sets for its workers, so idle OpenMP workers "
                         "do not spin on the cores the engine's Python thread runs on (0: torch's default)")
    ap.add_argument("--late-probes", type=int, default=1, help="1: rerun the fit probes after the rates")
    ap.add_argument("--tail-s", type=float, default=60.0,
                    help="budget kept after a rate's last arrival for its requests to finish (sizes the last rate)")
    ap.add_argument("--prewarm", action="store_true",
                    help="before each rate, on its fresh engine, serve a warm-up burst of every padded prompt length "
                         "so the CUDA graphs the rate needs are captured before it is measured (phase warm_<rate>)")
    ap.add_argument("--config", default="eager", choices=sorted(CONFIGS),
                    help="engine configuration (calibrate/engine_select.py); with --select, the fallback")
    ap.add_argument("--select", default="", help="comma-separated configurations to probe first; the first "
                    "GPU-bound and steady one serves the run")
    ap.add_argument("--select-budget-s", type=float, default=150.0, help="wall time the select probes may take")
    ap.add_argument("--prefix", default="engine_", help="start of every output file's name")
    ap.add_argument("--pack", type=Path, default=None, help="tar.gz of DIR, rewritten after every phase")
    for f in ("block_size", "num_blocks", "max_batch_tokens", "max_requests_per_batch"):
        ap.add_argument("--" + f.replace("_", "-"), type=int, default=getattr(EngineSettings, f))
    args = ap.parse_args(argv)
    unknown = [c for c in args.select.split(",") if c and c not in CONFIGS]
    if unknown:
        ap.error(f"--select: unknown configuration(s) {unknown}; known: {sorted(CONFIGS)}")
    wall0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    logf = open(args.out / f"{args.prefix}log.txt", "w")

    def log(msg: str) -> None:
        line = f"[{time.perf_counter() - wall0:7.1f}s] {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    facts = introspect(log)
    if args.torch_threads > 0:
        import torch
        torch.set_num_threads(args.torch_threads)
    base = EngineSettings(block_size=args.block_size, num_blocks=args.num_blocks,
                          max_batch_tokens=args.max_batch_tokens, max_requests_per_batch=args.max_requests_per_batch)
    settings = settings_for(args.config, base)
    t = time.perf_counter()
    model = build_model(args.shape, args.device, settings.attn_implementation)
    timings = {"model_build_s": time.perf_counter() - t}
    log(f"model {args.shape} built in {timings['model_build_s']:.1f} s")
    iterations = IterationLog()
    iterations.watch_gc(True)

    run = {"fit_rows": [], "stats": {}, "served": [], "warmup_s": 0.0, "config": args.config, "select": []}

    def checkpoint():
        write_outputs(args, iterations, run, facts, settings, timings, wall0)

    try:
        if args.select:
            select_rng = np.random.default_rng(args.seed + 2)
            vocab = SHAPES[args.shape]["vocab_size"]
            t = time.perf_counter()
            run["config"], run["select"] = select(
                [c for c in args.select.split(",") if c], model, base, Engine, iterations,
                lambda lengths: prompt_ids(select_rng, lengths, vocab), log, args.select_budget_s,
                min_left_s={"compile_async": 120.0})
            timings["select_s"] = time.perf_counter() - t
            settings = settings_for(run["config"], base)
            log(f"select: serving the run with {run['config']} ({timings['select_s']:.0f} s)")
            checkpoint()
        serve_phases(model, settings, args, iterations, run, wall0, log, checkpoint)
    except (Exception, KeyboardInterrupt):   # a failed or timed-out phase still leaves the phases before it on disk
        log(f"run stopped early: {traceback.format_exc()}")
    iterations.watch_gc(False)
    n = write_outputs(args, iterations, run, facts, settings, timings, wall0)
    log(f"done in {time.perf_counter() - wall0:.1f} s; {n} iterations logged")
    if args.pack:   # once more, so the packed log has its last line
        write_outputs(args, iterations, run, facts, settings, timings, wall0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
