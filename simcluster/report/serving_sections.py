"""The sections of a serving plan report: ranked plans, Pareto front, latency–throughput curves,
an iteration timeline and KV-cache use of the best plan, dropped candidates, cost-model methods.

The curves and the timeline come from re-simulating the top plans with the public serving
simulator (a few hundred requests each), so a report costs a few seconds on top of the search.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from simcluster.cost import cost_model_for
from simcluster.optimize.serving_capacity import horizon_s, replica_groups, slo_holds
from simcluster.report import plots
from simcluster.report.assumptions import method_summary, op_methods
from simcluster.report.document import Figure, Report, Section, Table
from simcluster.serving.simulate import simulate_serving

CURVE_FRACTIONS = (0.5, 1.0, 1.5, 2.0)   # offered rate / the target rate


def _ms(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 1e3:.1f}"


def _num(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec)


def slo_text(slo: dict) -> str:
    parts = [f"{k.removesuffix('_s').upper()} ≤ {slo[k] * 1e3:g} ms" for k in ("ttft_s", "tpot_s", "e2e_s")
             if slo.get(k)]
    return f"p{float(slo.get('percentile', 90)):g} " + ", ".join(parts) if parts else "no latency target"


def plans_table(rows: list[dict], pct: str, top: int) -> Table:
    """The ranked plans, best first, formatted."""
    out = []
    for r in rows[:top]:
        out.append({"rank": r.get("rank", ""), "plan": r["plan"], "replicas": r["replicas"], "GPUs": r["gpus"],
                    "USD/h": _num(r["usd_per_hour"], ".2f"),
                    "req/s per replica": _num(r.get("capacity_rps"), ".2f"),
                    f"TTFT {pct} ms": _ms(r.get(f"ttft_s_{pct}")), f"TPOT {pct} ms": _ms(r.get(f"tpot_s_{pct}")),
                    "USD / M output tokens": _num(r.get("usd_per_million_output_tokens"), ".3f"),
                    "SLO attainment": _num(r.get("slo_attainment"), ".1%"),
                    "meets SLO": "yes" if r.get("meets_slo") else "no",
                    "Pareto": "●" if r.get("pareto") else ""})
    return Table(f"The {min(top, len(rows))} best of {len(rows)} verified plans (each simulated on the whole "
                 f"workload); ● marks the cost–latency Pareto front", pd.DataFrame(out), highlight_first=True)


def deployment(row: dict, cost_method: str) -> list:
    """The serving simulator's replica groups of a plan row (its replicas, or P/D units)."""
    return replica_groups(row, int(row["replicas"]), cost_model_for(row["gpu"], cost_method))


def latency_curves(llm, trace, rows: list[dict], slo: dict, cost_method: str, router: str,
                   fractions=CURVE_FRACTIONS, n_requests: int = 120, tick=None) -> pd.DataFrame:
    """Goodput and latency percentiles of each plan's deployment at offered rates
    fraction × the trace's rate; the first n_requests of the trace keep its burstiness."""
    pct = f"p{float(slo.get('percentile', 90)):g}"
    sample = trace.head(min(n_requests, len(trace)))
    base = float(trace.rate_per_s)
    out = []
    for r in rows:
        groups = deployment(r, cost_method)
        for f in fractions:
            t = sample.rescale_rate(base * f)
            res = simulate_serving(llm, t, groups, router, until_s=horizon_s(t, slo))
            meets, s = slo_holds(res, slo)
            if tick:
                tick()
            # Goodput at an offered rate: the rate times the fraction of requests meeting every target
            # (unfinished requests count as misses), as in DistServe (Zhong et al. 2024).
            attained = s.get("slo_attainment", 0.0)
            out.append({"plan": r["plan"], "rate_per_s": base * f, "goodput_per_s": base * f * attained,
                        f"ttft_s_{pct}": s.get(f"ttft_s_{pct}", math.nan),
                        f"tpot_s_{pct}": s.get(f"tpot_s_{pct}", math.nan), "unfinished": res.unfinished,
                        "meets_slo": meets})
    return pd.DataFrame(out)


def timeline_window(iterations: pd.DataFrame, n_iterations: int = 80) -> tuple[float, float]:
    """A window in the busy middle of the run holding about n_iterations of the busiest replica
    (with P/D pools, the decode replica: prefill replicas iterate only when prompts arrive)."""
    if iterations.empty:
        return 0.0, 1.0
    first = iterations[iterations["replica"] == iterations["replica"].value_counts().index[0]]
    if first.empty:
        return 0.0, 1.0
    mid = len(first) * 2 // 5
    chunk = first.iloc[mid: mid + n_iterations]
    start = float(chunk["start_s"].iloc[0])
    end = float((chunk["start_s"] + chunk["duration_s"]).iloc[-1])
    return start, max(end, start + 1e-3)


def serving_sections(payload: dict, llm=None, trace=None, cost_method: str = "calibrated",
                     router: str = "least_outstanding", top: int = 10, curve_plans: int = 3,
                     curve_requests: int = 120, timeline_requests: int = 200, tick=None) -> Report:
    """The report of a serving plan search. payload: what `simcluster plan` writes to plan.json
    (plans, pareto_front, pruned, slo, rate_per_s, ...). With llm and trace (the workload at the
    target rate) the top plans are re-simulated for curves, a timeline and KV-cache use; `tick` is
    called after each of those simulations (a progress bar)."""
    slo = payload.get("slo", {})
    pct = f"p{float(slo.get('percentile', 90)):g}"
    rows = payload.get("plans", [])
    best = payload.get("best")
    front = set(payload.get("pareto_front", [r["plan"] for r in rows if r.get("pareto")]))
    rep = Report(title=f"Serving plan: {payload.get('scenario', '')}",
                 subtitle=f"{payload.get('llm', '')} · {payload.get('requests', 0)} requests at "
                          f"{payload.get('rate_per_s', 0):.2f} req/s · SLO {slo_text(slo)} · objective "
                          f"{payload.get('objective', 'min_cost')}")
    if best:
        rep.verdict = (f"Run {best['replicas']} × {best['plan']} ({best['gpus']} GPUs) for "
                       f"{best['usd_per_hour']:.2f} USD/h: TTFT {pct} {_ms(best.get(f'ttft_s_{pct}'))} ms, "
                       f"TPOT {pct} {_ms(best.get(f'tpot_s_{pct}'))} ms.")
    else:
        rep.verdict, rep.verdict_ok = "No plan in the search space meets the SLO.", False
    rep.facts = [("candidates", str(payload.get("candidates", len(rows)))),
                 ("verified plans", str(len(rows))), ("dropped", str(len(payload.get("pruned", [])))),
                 ("simulations", str(payload.get("simulations", "–"))),
                 ("search time", f"{payload.get('wall_s', 0):.1f} s")]
    if best:
        rep.facts.insert(0, ("best cost", f"{best['usd_per_hour']:.2f} USD/h"))

    ranked = Section("Ranked plans", [f"Plans are ranked by the objective ({payload.get('objective', 'min_cost')}); "
                                      "replica counts come from each plan's simulated capacity and are then verified "
                                      "on the whole workload."])
    if rows:
        ranked.tables.append(plans_table(rows, pct, top))
    rep.sections.append(ranked)

    feasible = [r for r in rows if r.get("meets_slo")]
    if rows and f"ttft_s_{pct}" in rows[0]:
        rep.sections.append(Section("Pareto front", [
            f"Cost against TTFT {pct} for every verified plan. A plan is on the front when no other plan "
            "meeting the SLO is both cheaper and faster (cost, TTFT and TPOT compared together)."],
            figures=[Figure("pareto", f"Cost vs TTFT {pct}; {len(front)} plans on the Pareto front",
                            plots.pareto_plot(rows, f"ttft_s_{pct}", front, best["plan"] if best else None))]))

    if llm is not None and trace is not None and feasible:
        top_rows = feasible[:curve_plans]
        curves = latency_curves(llm, trace, top_rows, slo, cost_method, router, n_requests=curve_requests,
                                tick=tick)
        rep.sections.append(Section("Latency–throughput curves", [
            f"The deployments of the {len(top_rows)} best plans, each re-simulated on the first "
            f"{min(curve_requests, len(trace))} requests at {len(CURVE_FRACTIONS)} offered rates "
            f"({', '.join(f'{f:g}' for f in CURVE_FRACTIONS)} × the target rate). Goodput counts requests "
            "that meet every SLO target; it bends away from the offered rate where the deployment saturates."],
            figures=[Figure("latency_throughput", "Goodput, TTFT and TPOT against offered rate",
                            plots.latency_throughput_plot(curves, pct, slo))]))
        rep.sections.extend(_best_plan_sections(llm, trace, feasible[0], slo, cost_method, router, timeline_requests))

    if payload.get("pruned"):
        pruned = pd.DataFrame(payload["pruned"], columns=["plan", "stage", "reason"])
        counts = pruned["stage"].value_counts()
        shown = pruned.groupby("stage", sort=False).head(10)
        rep.sections.append(Section("Dropped candidates", [
            "Candidates that were not verified, with the stage that dropped them: "
            + ", ".join(f"{n} at '{stage}'" for stage, n in counts.items())
            + (f"; up to 10 per stage are listed ({len(shown)} of {len(pruned)}, all in pruned.csv)."
               if len(shown) < len(pruned) else ".")],
            tables=[Table("Dropped candidates and why", shown)]))

    if llm is not None and rows:
        rep.sections.append(assumptions_section(llm, [(r["gpu"], r["tp"], r.get("pp", 1), r.get("ep", 1))
                                                      for r in rows[:top]], cost_method, trace,
                                                notes=payload.get("notes", [])))
    return rep


def _best_plan_sections(llm, trace, best: dict, slo: dict, cost_method: str, router: str,
                        n_requests: int) -> list[Section]:
    sample = trace.head(min(n_requests, len(trace)))
    res = simulate_serving(llm, sample, deployment(best, cost_method), router)
    it = res.iterations
    if it.empty:
        return []
    start, end = timeline_window(it)
    shown = min(8, it["replica"].nunique())
    timeline = Section("Iteration timeline of the best plan", [
        f"{best['replicas']} × {best['plan']} serving the first {len(sample)} requests at the target rate; "
        f"each bar is one batch iteration of one replica (the simulator's unit of work), "
        f"{shown} replica(s) shown over {(end - start) * 1e3:.0f} ms in the middle of the run. "
        "Chunked prefill shows as mixed iterations."],
        figures=[Figure("timeline", "Batch iterations per replica", plots.serving_timeline_plot(it, start, end))])
    stats = {"iterations": len(it), "mean iteration ms": f"{it['duration_s'].mean() * 1e3:.2f}",
             "mean decode batch": f"{it['n_decode'].mean():.1f}",
             "preemptions": int(it["preemptions"].sum()) if "preemptions" in it else 0}
    timeline.notes.append(", ".join(f"{k}: {v}" for k, v in stats.items()))
    sections = [timeline]
    if {"kv_used_tokens", "kv_capacity_tokens"} <= set(it.columns):
        use = it["kv_used_tokens"] / it["kv_capacity_tokens"].clip(lower=1)
        sections.append(Section("KV-cache use over time", [
            f"Fraction of each replica's KV-cache capacity ({int(it['kv_capacity_tokens'].iloc[0]):,} tokens per "
            f"replica) holding live sequences; peak {use.max():.1%}, mean {use.mean():.1%}. A cache near 100% "
            "preempts sequences; one far below it could take a larger batch."],
            figures=[Figure("kv_cache", "KV-cache use per replica", plots.kv_cache_plot(it))]))
    return sections


def assumptions_section(llm, shapes: list[tuple[str, int, int, int]], cost_method: str, trace=None,
                        notes: list[str] = ()) -> Section:
    """Which cost model priced each op family on each GPU, for representative iterations."""
    prompt = int(np.median(trace.prompt_tokens)) if trace is not None else 1024
    ctx = int(np.mean(trace.prompt_tokens) + np.mean(trace.output_tokens) / 2) if trace is not None else 1024
    methods = op_methods(llm, shapes, cost_method, prompt, 32, ctx)
    summary = method_summary(methods)
    sec = Section("Assumptions", [
        f"Cost model '{cost_method}'. Every op estimate carries the method that priced it: 'measured' "
        "(interpolated from profiles/measured of that GPU), 'fitted' (roofline × an efficiency curve fitted to "
        "measurements), 'transferred' (a curve measured on another GPU), 'roofline' (datasheet peaks × default "
        "efficiency: the fallback) and 'alpha-beta' (link latency and bandwidth for collectives). Shares are "
        f"of predicted time in a prefill of the median prompt ({prompt} tokens) and a decode of 32 sequences at "
        f"{ctx} tokens of context."],
        tables=[Table("Methods per GPU and op family (share of predicted time)", summary)])
    sec.notes.extend(notes)
    return sec


def simulation_sections(summary: dict, result, llm=None, slo: dict | None = None, cost_method: str = "calibrated",
                        shapes: list[tuple[str, int, int, int]] = ()) -> Report:
    """The report of one serving simulation (`simcluster simulate`): headline numbers, the
    iteration timeline, KV-cache use and the cost-model methods of the deployment's shapes.
    summary: ServingResult.summary(slo) (plus 'scenario'); result: the ServingResult; shapes:
    (gpu, tp, pp, ep) of the replica groups, for the Assumptions section."""
    slo = slo or {}
    pct = f"p{float(slo.get('percentile', 90)):g}"
    rep = Report(title=f"Serving simulation: {summary.get('scenario', '')}",
                 subtitle=f"{summary.get('requests', 0)} requests · {summary.get('gpu_count', '?')} GPUs · "
                          f"{summary.get('price_usd_per_hour', 0):.2f} USD/h · SLO {slo_text(slo)}")
    met = summary.get("slo_met")
    if met is not None:
        rep.verdict = (f"The deployment {'meets' if met else 'misses'} the SLO: "
                       f"{summary.get('slo_attainment', 0):.1%} of requests within every target.")
        rep.verdict_ok = bool(met)
    rep.facts = [(f"TTFT {pct}", f"{_ms(summary.get(f'ttft_s_{pct}'))} ms"),
                 (f"TPOT {pct}", f"{_ms(summary.get(f'tpot_s_{pct}'))} ms"),
                 ("throughput", f"{summary.get('request_throughput_per_s', 0):.2f} req/s"),
                 ("output tokens/s", f"{summary.get('output_token_throughput_per_s', 0):,.0f}"),
                 ("USD / M output tokens", _num(summary.get("usd_per_million_output_tokens"), ".3f"))]
    stats = ("mean", "p50", "p90", "p99")
    latency = [{"latency": name, **{f"{q} ms": _ms(summary.get(f"{name}_s_{q}")) for q in stats}}
               for name in ("ttft", "tpot", "itl", "max_itl", "e2e", "queue") if f"{name}_s_p50" in summary]
    others = [{"metric": k, "value": _num(v, ".4g") if isinstance(v, float) else str(v)}
              for k, v in summary.items()
              if isinstance(v, (int, float, bool, str)) and not any(k.endswith(f"_s_{q}") for q in stats)]
    half = (len(others) + 1) // 2
    pairs = pd.concat([pd.DataFrame(others[:half]).reset_index(drop=True),
                       pd.DataFrame(others[half:]).reset_index(drop=True)], axis=1).fillna("")
    rep.sections.append(Section("Summary", tables=[Table("Latency percentiles per request (ms)", pd.DataFrame(latency)),
                                                   Table("Every other summary metric (SI units: s, tokens, USD)",
                                                         pairs)]))
    it = result.iterations
    if not it.empty:
        start, end = timeline_window(it)
        rep.sections.append(Section("Iteration timeline", [
            f"Batch iterations per replica over {(end - start) * 1e3:.0f} ms in the middle of the run."],
            figures=[Figure("timeline", "Batch iterations per replica", plots.serving_timeline_plot(it, start, end))]))
        if {"kv_used_tokens", "kv_capacity_tokens"} <= set(it.columns):
            rep.sections.append(Section("KV-cache use over time", [
                "Fraction of each replica's KV-cache capacity holding live sequences."],
                figures=[Figure("kv_cache", "KV-cache use per replica", plots.kv_cache_plot(it))]))
    if llm is not None and shapes:
        rep.sections.append(assumptions_section(llm, list(shapes), cost_method))
    return rep
