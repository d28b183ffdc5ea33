"""Markdown rendering of a Report: GitHub-flavoured tables, figures linked as PNG files."""

from __future__ import annotations

from simcluster.report.document import Report, Table


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table_markdown(table: Table) -> str:
    frame = table.frame
    lines = [f"*{table.caption}*", "", "| " + " | ".join(_cell(c) for c in frame.columns) + " |",
             "|" + "|".join("---" for _ in frame.columns) + "|"]
    for i, row in enumerate(frame.itertuples(index=False)):
        cells = [_cell(v) for v in row]
        if table.highlight_first and i == 0:
            cells = [f"**{c}**" if c else c for c in cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(report: Report, figures_dir: str = "figures") -> str:
    """The report as Markdown; figure i links to `<figures_dir>/<name>.png` (written beside it)."""
    out = [f"# {report.title}", "", report.subtitle, ""]
    if report.verdict:
        out += [f"> **{'Answer' if report.verdict_ok else 'No answer'}:** {report.verdict}", ""]
    if report.facts:
        out += [" · ".join(f"**{k}**: {v}" for k, v in report.facts), ""]
    for s in report.sections:
        out += [f"## {s.title}", ""]
        for p in s.paragraphs:
            out += [p, ""]
        for t in s.tables:
            out += [table_markdown(t), ""]
        for f in s.figures:
            out += [f"![{f.caption}]({figures_dir}/{f.name}.png)", "", f"*{f.caption}*", ""]
        for n in s.notes:
            out.append(f"- {n}")
        if s.notes:
            out.append("")
    return "\n".join(out).rstrip() + "\n"
