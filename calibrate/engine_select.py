"""Engine configurations of transformers' continuous batching, and a short probe that picks one.

The eager engine (`eager`, run A) spends ~100 ms of Python launching ~1000 kernels per iteration
while the GPU is busy 14-20 % of it, so its speed is the host's speed and wanders with it. The
other configurations try to move the iteration onto the GPU with what transformers 5.x offers
without extra packages (no flash-attn on the image):

- `use_cuda_graph`: the forward is captured once per padded (query tokens, KV tokens) shape and
  replayed; transformers follows an explicit True for any attention implementation, pads queries
  to multiples of `q_padding_interval_size` and KV to multiples of `kv_padding_interval_size`
  (generation/continuous_batching initialization: `decide_use_cuda_graphs`);
- `use_async_batching`: two IO buffer pairs and two streams, so the CPU prepares batch N+1 while
  the GPU runs batch N;
- `default_compile_level`: torch.compile of the forward (level 1: mode "default", dynamic shapes).

`select` starts each candidate on a fresh engine, runs a b8 and a b32 decode probe and keeps the
first whose b32 decode iterations are short (GPU-bound: well under the eager engine's host time)
and steady; with none, the fastest candidate that worked, and with none of those, `eager`.
"""

from __future__ import annotations

import gc
import math
import time
import traceback

import numpy as np

# Name -> EngineSettings fields. Order is the order `select` tries them in.
CONFIGS = {
    # Queries padded to 256 (preset 64): a quarter of the graph shapes to capture while serving,
    # for decode GEMMs that stay memory-bound at 256 rows.
    "graphs_async_q256": dict(attn_implementation="sdpa", use_cuda_graph=True, use_async_batching=True,
                              q_padding_interval_size=256),
    "graphs_async": dict(attn_implementation="sdpa", use_cuda_graph=True, use_async_batching=True),
    "graphs": dict(attn_implementation="sdpa", use_cuda_graph=True, use_async_batching=False),
    "graphs_eager_attn": dict(attn_implementation="eager", use_cuda_graph=True, use_async_batching=False),
    "compile_async": dict(attn_implementation="sdpa", use_cuda_graph=False, use_async_batching=True,
                          default_compile_level=1),
    "eager": dict(attn_implementation="sdpa", use_cuda_graph=False, use_async_batching=False),
}
SELECT_PROBES = (("b8", 8, 256, 48), ("b32", 32, 256, 48))   # (name, sequences, prompt, output tokens)
# Prefills of new lengths arriving while others decode: each new padded shape is a graph capture
# in the middle of serving, which the decode probes never show. Reported, not used to select.
MIX_PROMPTS = (128, 1900, 300, 1200, 700, 2000, 200, 1500, 900, 450, 1700, 600)
MIX_GAP_S, MIX_OUTPUT = 0.3, 24
PROBE_DEADLINE_S = 25.0   # the eager engine needs ~6 s for the b32 probe
# Run A (eager, H100, 2026-11-22): decode iterations at 32 sequences took ~95-117 ms, nearly all host
# Python; the GPU's share of an 8B decode step is ~10 ms. A candidate whose b32 decode iteration is
# under this is mostly GPU-bound.
GPU_BOUND_ITERATION_S = 0.035
STEADY_P90_OVER_P50 = 1.25


def settings_for(name: str, base):
    """A copy of `base` (EngineSettings) with configuration `name` applied."""
    import dataclasses
    return dataclasses.replace(base, resolved={}, **CONFIGS[name])


def decode_iterations(rows: list[tuple], phase: str, n: int) -> dict:
    """Wall time between consecutive iteration starts while the most sequences decode (`n`, or fewer
    when the KV cache holds fewer), and the GPU and launch times of those iterations (IterationLog rows)."""
    mine = sorted((r for r in rows if r[0] == phase), key=lambda r: r[1])
    full = max((a[5] for a in mine if a[5] == a[8]), default=0)
    gaps, gpu, launch = [], [], []
    for a, b in zip(mine, mine[1:]):
        if a[5] == full and a[8] == full:    # every request in the batch is one decode token
            gaps.append(b[1] - a[1])
            gpu.append(a[15])
            launch.append(a[14])
    if not gaps:
        return {"iterations": 0}
    g = np.asarray(gaps)
    p50, p90 = float(np.median(g)), float(np.percentile(g, 90))
    gpu_med = float(np.nanmedian(gpu)) if np.isfinite(gpu).any() else math.nan
    return {"iterations": len(g), "sequences": int(full), "iteration_p50_s": p50, "iteration_p90_s": p90,
            "p90_over_p50": p90 / max(p50, 1e-9), "gpu_p50_s": gpu_med,
            "launch_p50_s": float(np.nanmedian(launch)) if np.isfinite(launch).any() else math.nan,
            "gpu_fraction": gpu_med / max(p50, 1e-9) if math.isfinite(gpu_med) else math.nan}


def engaged(name: str, resolved: dict) -> bool:
    """Whether the engine runs what configuration `name` asked for (transformers turns CUDA graphs off
    without CUDA, and may drop a compile config)."""
    asked = CONFIGS[name]
    graphs = resolved.get("use_cuda_graph")
    if asked.get("use_cuda_graph") and not (any(graphs) if isinstance(graphs, list | tuple) else bool(graphs)):
        return False
    if asked.get("use_async_batching") and not resolved.get("use_async_batching"):
        return False
    if asked.get("default_compile_level") and not resolved.get("varlen_compile_config"):
        return False
    return True


def mix_iterations(rows: list[tuple], phase: str) -> dict:
    """Iteration walls (start to start) of the mixed probe: median, longest, and how many took over
    5x the median (graph captures, compiles)."""
    starts = sorted(r[1] for r in rows if r[0] == phase)
    if len(starts) < 3:
        return {"iterations": len(starts)}
    g = np.diff(starts)
    med = float(np.median(g))
    return {"iterations": len(g), "iteration_p50_s": med, "iteration_max_s": float(g.max()),
            "long_iterations": int((g > 5 * med).sum()), "long_iterations_s": float(g[g > 5 * med].sum())}


def passes(result: dict) -> bool:
    b32 = result.get("b32", {})
    return (result["error"] == "" and result["finished"] == result["requests"] and result["engaged"]
            and b32.get("iterations", 0) >= 10 and b32["iteration_p50_s"] <= GPU_BOUND_ITERATION_S
            and b32["p90_over_p50"] <= STEADY_P90_OVER_P50)


def try_config(name: str, model, base, engine_cls, iterations, prompts_fn, log) -> dict:
    """Start configuration `name` on a fresh engine, run the select probes, stop it; one flat record."""
    settings = settings_for(name, base)
    result = {"config": name, "error": "", "warmup_s": math.nan, "requests": 0, "finished": 0,
              "wall_s": math.nan, "resolved": {}, "engaged": False, "graphs_before": {}, "graphs_after": {}}
    t0 = time.perf_counter()
    engine = None
    try:
        engine = engine_cls(model, settings, log, iterations)
        result["warmup_s"] = engine.warmup_s
        result["resolved"] = dict(settings.resolved)
        result["engaged"] = engaged(name, result["resolved"])
        result["graphs_before"] = engine.graph_counts()
        for probe, n, prompt, output in SELECT_PROBES:
            phase = f"select_{name}_{probe}"
            recs, _ = engine.serve(phase, np.zeros(n), prompts_fn([prompt] * n), [output] * n, deadline_s=PROBE_DEADLINE_S)
            result["requests"] += n
            finished = sum(1 for r in recs if not math.isnan(r["finish_s"]))
            result["finished"] += finished
            errors = {r["error"] for r in recs if r["error"]}
            if errors:
                result["error"] = "; ".join(sorted(errors))[:300]
            iterations.resolve_gpu_times()
            result[probe] = decode_iterations(iterations.rows, phase, n)
            if not engine.alive():
                result["error"] = result["error"] or "generation thread died"
                break
            if finished < n:   # a hung or crawling engine: stop spending the select budget on it
                result["error"] = result["error"] or f"{probe}: {finished}/{n} finished in {PROBE_DEADLINE_S} s"
                break
        if engine.alive() and not result["error"]:
            phase = f"select_{name}_mix"
            n = len(MIX_PROMPTS)
            recs, _ = engine.serve(phase, np.arange(n) * MIX_GAP_S, prompts_fn(list(MIX_PROMPTS)), [MIX_OUTPUT] * n,
                                   deadline_s=PROBE_DEADLINE_S)
            iterations.resolve_gpu_times()
            result["mix"] = mix_iterations(iterations.rows, phase)
            result["mix"]["finished"] = sum(1 for r in recs if not math.isnan(r["finish_s"]))
        result["graphs_after"] = engine.graph_counts()
    except Exception as e:   # a configuration this transformers cannot run is a result, not the end of the run
        result["error"] = f"{type(e).__name__}: {e}"[:300]
        log(f"select: {name} failed: {traceback.format_exc()}")
    finally:
        if engine is not None and engine.manager is not None:
            try:
                engine.stop()
            except Exception:
                log(f"select: stopping {name} failed: {traceback.format_exc()}")
        gc.unfreeze()
        gc.collect()
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
    result["wall_s"] = time.perf_counter() - t0
    result["passes"] = passes(result)
    log(f"select: {name}: {summary(result)}")
    return result


def summary(result: dict) -> str:
    parts = [f"passes {result['passes']}", f"engaged {result['engaged']}", f"warmup {result['warmup_s']:.1f} s",
             f"finished {result['finished']}/{result['requests']}", f"wall {result['wall_s']:.1f} s"]
    for probe, *_ in SELECT_PROBES:
        p = result.get(probe, {})
        if p.get("iterations"):
            parts.append(f"{probe}: {p['iterations']} it, p50 {p['iteration_p50_s'] * 1e3:.1f} ms, "
                         f"p90/p50 {p['p90_over_p50']:.2f}, gpu {p['gpu_p50_s'] * 1e3:.1f} ms, "
                         f"launch {p['launch_p50_s'] * 1e3:.1f} ms")
    m = result.get("mix", {})
    if m.get("iterations", 0) >= 2:
        parts.append(f"mix: {m['iterations']} it, p50 {m['iteration_p50_s'] * 1e3:.1f} ms, max "
                     f"{m['iteration_max_s'] * 1e3:.0f} ms, {m['long_iterations']} over 5x p50 "
                     f"({m['long_iterations_s']:.2f} s), finished {m.get('finished')}")
    if result["error"]:
        parts.append(f"error {result['error']}")
    parts.append(f"graphs {result['graphs_before']} -> {result['graphs_after']}")
    parts.append(f"resolved cuda graphs {result['resolved'].get('use_cuda_graph')}, async "
                 f"{result['resolved'].get('use_async_batching')}, compile {result['resolved'].get('varlen_compile_config')}")
    return "; ".join(parts)


def select(candidates: list[str], model, base, engine_cls, iterations, prompts_fn, log, budget_s: float,
           min_left_s: dict | None = None) -> tuple[str, list[dict]]:
    """Try `candidates` in order within `budget_s`; return (the chosen name, one record per try)."""
    min_left_s = min_left_s or {}
    t0 = time.perf_counter()
    results = []
    for name in candidates:
        left = budget_s - (time.perf_counter() - t0)
        if left < min_left_s.get(name, 30.0):
            log(f"select: {name} skipped, {left:.0f} s of the select budget left")
            continue
        results.append(try_config(name, model, base, engine_cls, iterations, prompts_fn, log))
        if results[-1]["passes"]:
            return name, results
    worked = [r for r in results if r["error"] == "" and r.get("b32", {}).get("iterations", 0) >= 10]
    if worked:
        best = min(worked, key=lambda r: r["b32"]["iteration_p50_s"])
        log(f"select: no candidate is GPU-bound and steady; fastest that worked: {best['config']}")
        return best["config"], results
    log("select: no candidate worked; falling back to eager")
    return "eager", results


def select_rows(results: list[dict]) -> list[dict]:
    """Flat rows for engine_select.csv."""
    rows = []
    for r in results:
        row = {"config": r["config"], "passes": r["passes"], "engaged": r["engaged"], "error": r["error"], "warmup_s": r["warmup_s"],
               "requests": r["requests"], "finished": r["finished"], "wall_s": r["wall_s"],
               "cuda_graphs": r["resolved"].get("use_cuda_graph"),
               "async_batching": r["resolved"].get("use_async_batching"),
               "compile": r["resolved"].get("varlen_compile_config"),
               "attn_implementation": r["resolved"].get("attn_implementation"),
               "graphs_after": r["graphs_after"]}
        for probe, *_ in SELECT_PROBES:
            for k in ("iterations", "iteration_p50_s", "iteration_p90_s", "p90_over_p50", "gpu_p50_s",
                      "launch_p50_s", "gpu_fraction"):
                row[f"{probe}_{k}"] = r.get(probe, {}).get(k, math.nan)
        for k in ("iterations", "iteration_p50_s", "iteration_max_s", "long_iterations", "long_iterations_s", "finished"):
            row[f"mix_{k}"] = r.get("mix", {}).get(k, math.nan)
        rows.append(row)
    return rows
