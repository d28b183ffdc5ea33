"""The sections of a training plan report: ranked plans, where the step time goes, the pipeline
timeline of the best plan (stages × time, from a traced re-simulation), its memory per GPU,
dropped candidates and the cost-model methods."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd

from simcluster.cost import cost_model_for
from simcluster.hardware.node import default_node_for
from simcluster.report import plots
from simcluster.report.document import Figure, Report, Section, Table
from simcluster.report.serving_sections import assumptions_section
from simcluster.training.plan import TrainingPlan
from simcluster.training.simulate import simulate_training

GIB = 2**30


def _f(v, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def training_plan_of(row: dict) -> TrainingPlan:
    """The TrainingPlan a ranked row describes (rows carry the plan's fields)."""
    names = {f.name for f in dataclasses.fields(TrainingPlan)}
    return TrainingPlan(**{k: v for k, v in row.items() if k in names})


def plans_table(rows: list[dict], top: int) -> Table:
    out = []
    for r in rows[:top]:
        out.append({"rank": r.get("rank", ""), "plan": r["plan"],
                    "memory GiB/GPU": _f(r.get("peak_memory_gib"), ".1f"),
                    "est. step s": _f(r.get("est_step_s"), ".3f"), "est. MFU": _f(r.get("est_mfu"), ".1%"),
                    "sim. step s": _f(r.get("sim_step_s"), ".3f"), "sim. MFU": _f(r.get("sim_mfu"), ".1%"),
                    "sim. tokens/s": _f(r.get("sim_tokens_per_s"), ",.0f"),
                    "est. error": _f(r.get("estimate_error"), "+.1%")})
    return Table(f"The {min(top, len(rows))} best of {len(rows)} plans that fit; 'sim.' columns are full "
                 "simulations, 'est.' the analytic screen", pd.DataFrame(out), highlight_first=True)


def training_sections(payload: dict, llm=None, cost_method: str = "calibrated", top: int = 10) -> Report:
    """The report of a training plan search (the payload of `simcluster plan` on a training
    scenario). With the LLM spec, the best plan is re-simulated with a trace for the timeline."""
    rows = payload.get("plans", [])
    best = payload.get("best")
    rep = Report(title=f"Training plan: {payload.get('scenario', '')}",
                 subtitle=f"{payload.get('llm', '')} · {payload.get('n_gpus', '?')} × {payload.get('gpu', '')} · "
                          f"global batch {payload.get('global_batch', '?')} × {payload.get('seq_len', '?')} tokens")
    if best:
        step = best.get("sim_step_s", best.get("est_step_s"))
        mfu = best.get("sim_mfu", best.get("est_mfu"))
        rep.verdict = (f"Train with {best['plan']}: {step:.3f} s per step, MFU {mfu:.1%}, "
                       f"{best.get('peak_memory_gib', math.nan):.1f} GiB per GPU.")
        rep.facts.append(("step time", f"{step:.3f} s"))
        rep.facts.append(("MFU", f"{mfu:.1%}"))
    else:
        rep.verdict, rep.verdict_ok = "No plan in the search space fits in memory.", False
    rep.facts += [("candidates", str(payload.get("candidates", len(rows)))), ("fit in memory", str(len(rows))),
                  ("simulated", str(payload.get("simulated", "–"))),
                  ("search time", f"{payload.get('wall_s', 0):.1f} s")]
    ranked = Section("Ranked plans", ["Every candidate is screened analytically (memory, then an estimated step "
                                      "time); the best are simulated in full and ranked by simulated step time."])
    if rows:
        ranked.tables.append(plans_table(rows, top))
    rep.sections.append(ranked)

    simulated = [r for r in rows if "sim_step_s" in r]
    if simulated:
        rep.sections.append(Section("Where the step time goes", [
            "Simulated step time of each fully simulated plan, split into compute, communication that "
            "is not hidden behind compute, pipeline bubbles and the optimizer step."],
            figures=[Figure("breakdown", "Simulated step time by component",
                            plots.stacked_bar_plot([r["plan"] for r in simulated],
                                                   {"compute": [r["sim_compute_s"] for r in simulated],
                                                    "exposed comm": [r["sim_exposed_comm_s"] for r in simulated],
                                                    "bubble": [r["sim_bubble_s"] for r in simulated],
                                                    "optimizer": [r["sim_optimizer_s"] for r in simulated]},
                                                   "step time (s)"))]))
    if llm is not None and best:
        rep.sections.extend(_best_plan_sections(llm, best, cost_method))
    if payload.get("pruned"):
        pruned = pd.DataFrame(payload["pruned"], columns=["plan", "stage", "reason"])
        counts = pruned["stage"].value_counts()
        shown = pruned.groupby("stage", sort=False).head(8)
        rep.sections.append(Section("Dropped candidates", [
            ", ".join(f"{n} dropped at '{stage}'" for stage, n in counts.items())
            + f"; up to 8 per stage are listed ({len(shown)} of {len(pruned)})."],
            tables=[Table("Dropped candidates and why", shown)]))
    if llm is not None and best:
        sec = assumptions_section(llm, [(best["gpu"], best["tp"], 1, best.get("ep", 1))], cost_method)
        sec.paragraphs.append("Training prices backward and optimizer kernels with the same kernel models; "
                              "data-parallel and pipeline traffic uses the node's link model.")
        sec.notes.extend(payload.get("notes", []))
        rep.sections.append(sec)
    return rep


def _best_plan_sections(llm, best: dict, cost_method: str) -> list[Section]:
    plan = training_plan_of(best)
    node = default_node_for(plan.gpu)
    result = simulate_training(llm, plan, cost_model_for(plan.gpu, cost_method, node), node, record_trace=True)
    timeline = Section("Pipeline timeline of the best plan", [
        f"One iteration of {best['plan']} ({plan.grad_accum} micro-batches per pipeline, schedule "
        f"{plan.schedule}{f' with {plan.virtual_stages} virtual stages' if plan.virtual_stages > 1 else ''}): "
        "per pipeline stage, forward (F), backward (B) and weight-gradient (W) work on the main lane, "
        "point-to-point sends and data-parallel collectives on the thin lanes. Gaps on the main lane are "
        "the pipeline bubble."],
        figures=[Figure("pipeline", "Pipeline stages × time, one iteration",
                        plots.training_timeline_plot(result.trace_events, plan.pp))])
    timeline.notes.append(f"step {result.time_s:.3f} s: " + ", ".join(
        f"{k.removesuffix('_s').replace('_', ' ')} {v:.3f} s" for k, v in result.breakdown().items()))
    m = result.memory.as_record()
    totals = ("gpu_memory_bytes", "peak_memory_bytes")
    parts = {k.removesuffix("_bytes"): v / GIB for k, v in m.items() if k.endswith("_bytes") and k not in totals
             and isinstance(v, (int, float))}
    memory = Section("Memory per GPU", [
        f"Peak memory of the busiest GPU: {result.peak_memory_bytes / GIB:.1f} GiB of "
        f"{m.get('gpu_memory_bytes', 0) / GIB:.0f} GiB."],
        tables=[Table("Memory per GPU by component (GiB)",
                      pd.DataFrame([{"component": k, "GiB": f"{v:.2f}"} for k, v in parts.items()]))])
    return [timeline, memory]
