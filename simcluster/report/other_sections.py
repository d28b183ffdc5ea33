"""Report sections for plan kinds other than serving (training, GPU mix, expert placement)."""

from __future__ import annotations

import pandas as pd

from simcluster.report.document import Report, Section, Table


def scalar_table(rows: list[dict], caption: str, top: int = 20) -> Table:
    """The scalar columns of flat records (nested values dropped), floats to 4 significant digits."""
    frame = pd.DataFrame([{k: v for k, v in r.items() if not isinstance(v, (dict, list))} for r in rows[:top]])
    return Table(caption, frame.map(lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)),
                 highlight_first=True)


def other_sections(kind: str, payload: dict, scenario=None, **options) -> Report:
    rep = Report(title=f"{kind.replace('_', ' ').capitalize()} plan: {payload.get('scenario', '')}",
                 subtitle=str(payload.get("llm", "")))
    if payload.get("plans"):
        rep.sections.append(Section("Ranked plans", tables=[scalar_table(payload["plans"], "Plans, best first")]))
    return rep
