"""Self-contained HTML reports: one file, inline CSS, figures as base64 PNG, no scripts, no
external assets (it opens offline and in any browser), and `write_report`, which `simcluster plan
--out DIR` calls to write report.html and report.md beside plan.json.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

from simcluster.report.document import Report, Table

CSS = """
:root { --ink:#1d2330; --muted:#5b6475; --line:#e3e6ec; --accent:#0b5cab; --ok:#1a7f4b; --bad:#b42318;
        --bg:#f6f7f9; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font: 14px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
header { background:#12233d; color:#fff; padding:28px 40px 22px; }
header .brand { font-size:12px; letter-spacing:.12em; text-transform:uppercase; color:#9fb6d6; }
header h1 { margin:6px 0 4px; font-size:26px; font-weight:600; }
header p { margin:0; color:#c9d6ea; }
main { max-width:1280px; margin:0 auto; padding:24px 40px 48px; }
.verdict { border-left:5px solid var(--ok); background:#fff; padding:14px 18px; margin:0 0 18px;
           font-size:16px; box-shadow:0 1px 2px rgba(0,0,0,.06); }
.verdict.bad { border-left-color:var(--bad); }
.facts { display:flex; flex-wrap:wrap; gap:12px; margin-bottom:8px; }
.fact { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 16px; min-width:140px; }
.fact .v { font-size:20px; font-weight:600; }
.fact .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.05em; }
nav.toc { margin:18px 0 6px; color:var(--muted); }
nav.toc a { color:var(--accent); text-decoration:none; margin-right:14px; }
section { background:#fff; border:1px solid var(--line); border-radius:10px; padding:18px 24px; margin:18px 0; }
section h2 { margin:0 0 8px; font-size:19px; }
section p { margin:6px 0 10px; color:#333a48; max-width:980px; }
.table-wrap { overflow-x:auto; margin:8px 0 4px; }
table { border-collapse:collapse; font-size:12.5px; width:100%; }
caption { caption-side:top; text-align:left; color:var(--muted); font-size:12px; padding:4px 0 6px; }
th { background:#eef1f6; text-align:left; font-weight:600; padding:6px 8px; border-bottom:2px solid #d5dae3;
     vertical-align:bottom; }
td { padding:5px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
tr.best td { background:#eaf6ee; font-weight:600; }
tbody tr:hover td { background:#f3f6fb; }
figure { margin:12px 0 6px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:6px; background:#fff; }
figcaption { color:var(--muted); font-size:12px; margin-top:4px; }
ul.notes { color:var(--muted); font-size:12.5px; margin:8px 0 0; padding-left:20px; }
footer { color:var(--muted); font-size:12px; text-align:center; padding:10px 0 30px; }
"""


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def _is_number(text: str) -> bool:
    t = text.replace(",", "").replace("%", "").strip()
    if t == "–":
        return True
    try:
        float(t)
    except ValueError:
        return False
    return True


def table_html(table: Table) -> str:
    frame = table.frame
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for i, row in enumerate(frame.itertuples(index=False)):
        cells = []
        for v in row:
            text = str(v)
            cls = ' class="num"' if _is_number(text) else ""
            cells.append(f"<td{cls}>{html.escape(text)}</td>")
        cls = ' class="best"' if table.highlight_first and i == 0 else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return (f'<div class="table-wrap"><table><caption>{html.escape(table.caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def render_html(report: Report) -> str:
    """The whole report as one HTML document (UTF-8, no scripts, no external references)."""
    e = html.escape
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
             f"<title>{e(report.title)}</title><style>{CSS}</style></head><body>",
             f"<header><div class=\"brand\">simcluster report</div><h1>{e(report.title)}</h1>"
             f"<p>{e(report.subtitle)}</p></header><main>"]
    if report.verdict:
        parts.append(f"<div class=\"verdict{'' if report.verdict_ok else ' bad'}\">{e(report.verdict)}</div>")
    if report.facts:
        parts.append("<div class=\"facts\">" + "".join(
            f"<div class=\"fact\"><div class=\"v\">{e(v)}</div><div class=\"k\">{e(k)}</div></div>"
            for k, v in report.facts) + "</div>")
    parts.append("<nav class=\"toc\">" + "".join(f"<a href=\"#{_slug(s.title)}\">{e(s.title)}</a>"
                                                  for s in report.sections) + "</nav>")
    for s in report.sections:
        parts.append(f"<section id=\"{_slug(s.title)}\"><h2>{e(s.title)}</h2>")
        parts.extend(f"<p>{e(p)}</p>" for p in s.paragraphs)
        parts.extend(table_html(t) for t in s.tables)
        for f in s.figures:
            data = base64.b64encode(f.png).decode("ascii")
            parts.append(f"<figure><img alt=\"{e(f.caption)}\" src=\"data:image/png;base64,{data}\">"
                         f"<figcaption>{e(f.caption)}</figcaption></figure>")
        if s.notes:
            parts.append("<ul class=\"notes\">" + "".join(f"<li>{e(n)}</li>" for n in s.notes) + "</ul>")
        parts.append("</section>")
    parts.append("</main><footer>Generated by simcluster. Predictions are simulated; the Assumptions section "
                 "says which cost models priced them.</footer></body></html>")
    return "\n".join(parts)


def build_report(payload: dict, scenario=None, **options) -> Report:
    """The Report of a `plan` payload (plan.json) of any kind. With the scenario, serving and
    training reports re-simulate the best plans for curves and timelines."""
    kind = payload.get("kind", getattr(scenario, "kind", "serving"))
    if kind == "serving":
        from simcluster.report.serving_sections import serving_sections
        llm = trace = None
        cost_method, router = "calibrated", "least_outstanding"
        if scenario is not None:
            from simcluster.commands.inputs import scenario_llm, scenario_trace
            llm, trace = scenario_llm(scenario), scenario_trace(scenario)
            if payload.get("rate_per_s"):
                trace = trace.rescale_rate(float(payload["rate_per_s"]))
            cost_method = scenario.cost_model
            router = scenario.serving.router if scenario.serving else router
        return serving_sections(payload, llm, trace, cost_method, router, **options)
    if kind == "training":
        from simcluster.report.training_sections import training_sections
        llm, cost_method = None, "calibrated"
        if scenario is not None:
            from simcluster.commands.inputs import scenario_llm
            llm, cost_method = scenario_llm(scenario), scenario.cost_model
        return training_sections(payload, llm, cost_method, **options)
    from simcluster.report.other_sections import other_sections
    return other_sections(kind, payload, scenario, **options)


def write_report(out_dir: str | Path, payload: dict, scenario=None, progress: bool = False,
                 **options) -> list[Path]:
    """Write report.html (self-contained) and report.md (+ figures/*.png) into out_dir.

    payload: the `simcluster plan` result (as in plan.json); scenario: the validated Scenario it
    answered (optional; without it the report shows only what the payload holds); progress: show
    a progress bar on stderr while the best serving plans are re-simulated.
    Returns the paths written.
    """
    from simcluster.report.markdown import render_markdown
    from simcluster.report.output import write_results
    if progress and payload.get("kind", "serving") == "serving" and scenario is not None:
        from rich.console import Console
        from rich.progress import Progress
        feasible = sum(1 for r in payload.get("plans", []) if r.get("meets_slo"))
        from simcluster.report.serving_sections import CURVE_FRACTIONS
        total = min(feasible, options.get("curve_plans", 3)) * len(CURVE_FRACTIONS)
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("report: simulating the best plans", total=total)
            report = build_report(payload, scenario, tick=lambda: bar.advance(task), **options)
    else:
        report = build_report(payload, scenario, **options)
    files = {"report.html": render_html(report), "report.md": render_markdown(report, "figures")}
    written = write_results(out_dir, files)
    if report.figures():
        written += write_results(Path(out_dir) / "figures", {f"{f.name}.png": f.png for f in report.figures()})
    return written


def write_simulation_report(out_dir: str | Path, summary: dict, result, scenario=None) -> list[Path]:
    """Write report.html and report.md (+ figures/) of one serving simulation into out_dir.

    summary: the JSON summary `simcluster simulate` prints; result: its ServingResult; scenario:
    the validated Scenario (for the SLO and the cost-model Assumptions section)."""
    from simcluster.report.markdown import render_markdown
    from simcluster.report.output import write_results
    from simcluster.report.serving_sections import simulation_sections
    llm, slo, cost_method, shapes = None, {}, "calibrated", []
    if scenario is not None:
        from simcluster.commands.inputs import scenario_llm
        llm, slo, cost_method = scenario_llm(scenario), scenario.slo.model_dump(), scenario.cost_model
        if scenario.serving is not None:
            shapes = [(r.gpu, r.tp, r.pp, r.ep) for r in scenario.serving.replicas]
    report = simulation_sections(summary, result, llm, slo, cost_method, shapes)
    written = write_results(out_dir, {"report.html": render_html(report), "report.md": render_markdown(report)})
    if report.figures():
        written += write_results(Path(out_dir) / "figures", {f"{f.name}.png": f.png for f in report.figures()})
    return written
