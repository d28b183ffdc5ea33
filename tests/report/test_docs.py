"""docs/: the generated pages are current, every schema key has a meaning, links resolve, and
every `simcluster ...` command the docs show parses with today's CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from simcluster.cli import build_parser
from simcluster.report.schema_doc import scenario_reference

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = ("scenario-reference.md", "concepts.md", "calibrate.md", "accuracy.md", "sweeps-on-ray.md")


def test_scenario_reference_is_current():
    committed = (DOCS / "scenario-reference.md").read_text()
    assert committed == scenario_reference(), \
        "regenerate: python -m simcluster.report.schema_doc docs/scenario-reference.md"


def test_every_scenario_key_has_type_default_and_meaning():
    rows = [ln for ln in scenario_reference().splitlines() if ln.startswith("| `")]
    assert len(rows) > 100
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        key, typ, _unit, default, meaning = cells[:5]
        assert typ and default, row
        assert meaning, f"{key}: add description= to its Field in simcluster/scenario.py"
    # Units follow the key names: seconds, bytes, rates.
    text = scenario_reference()
    assert re.search(r"\| `ttft_s` \| float or null \| s \|", text)
    assert re.search(r"\| `swap_space_bytes` \| float \| bytes \|", text)
    assert re.search(r"\| `rate_per_s` \| .* \| 1/s \|", text)


def _table(text: str) -> dict[tuple[str, str], list[float]]:
    out = {}
    for ln in text.splitlines():
        m = re.match(r"\| ([\w-]+) \| (\w+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|", ln)
        if m:
            out[(m[1], m[2])] = [float(m[3]), float(m[4])]
    return out


def test_accuracy_page_matches_the_measured_profiles():
    from simcluster.report.accuracy_doc import accuracy_doc
    committed, fresh = _table((DOCS / "accuracy.md").read_text()), _table(accuracy_doc())
    assert fresh, "no measured GPU in profiles/measured"
    assert committed.keys() == fresh.keys(), \
        "regenerate: python -m simcluster.report.accuracy_doc docs/accuracy.md"
    for key, (n, mape) in fresh.items():
        # The cost model is refitted as measurements arrive; a stale page is off by points, not tenths.
        assert committed[key][0] == n and abs(committed[key][1] - mape) <= 3.0, \
            f"{key}: MAPE {mape:.1f}% now, {committed[key][1]:.1f}% in docs/accuracy.md; regenerate it"


def test_readme_links_every_page_and_links_resolve():
    readme = (ROOT / "README.md").read_text()
    for page in PAGES:
        assert f"docs/{page}" in readme, f"README.md: link docs/{page} in the Documentation section"
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#]+)\)", (DOCS / page).read_text()):
            if not target.startswith("http"):
                assert (DOCS / target).exists(), f"docs/{page}: broken link {target}"


def _commands(text: str) -> list[str]:
    cmds = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S):
        for ln in block.replace("\\\n", " ").splitlines():
            ln = ln.split("  #")[0].strip()
            if ln.startswith("simcluster "):
                cmds.append(ln)
    return cmds


@pytest.mark.parametrize("page", ["README.md", *(f"docs/{p}" for p in PAGES)])
def test_documented_commands_parse(page):
    parser = build_parser()
    for cmd in _commands((ROOT / page).read_text()):
        argv = shlex.split(cmd.replace("<", "").replace(">", ""))[1:]
        try:
            parser.parse_args(argv)
        except SystemExit as err:
            pytest.fail(f"{page}: `{cmd}` does not parse (exit {err.code})")
