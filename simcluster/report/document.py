"""A report as plain data: titled sections of paragraphs, tables and figures.

The section builders (serving_sections.py, training_sections.py, placement_sections.py) fill it;
html.py and markdown.py render the same document, so both formats always say the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass(frozen=True)
class Figure:
    """A rendered plot: `png` bytes (embedded in HTML as base64, written as a file for Markdown)."""

    name: str            # file stem, e.g. "pareto"
    caption: str
    png: bytes


@dataclass(frozen=True)
class Table:
    """A table whose cells are already formatted strings (units in the column names)."""

    caption: str
    frame: pd.DataFrame
    highlight_first: bool = False   # the best row, drawn emphasised


@dataclass
class Section:
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)   # bullet points under the content


@dataclass
class Report:
    """title: the question answered; facts: (label, value) pairs shown as cards at the top."""

    title: str
    subtitle: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    verdict: str = ""             # one sentence: the answer
    verdict_ok: bool = True       # False when no plan answers the question

    def figures(self) -> list[Figure]:
        return [f for s in self.sections for f in s.figures]
