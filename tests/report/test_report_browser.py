"""A real plan run's report, opened in headless Chromium: the DOM holds the tables and figures,
nothing is fetched from outside the file, the console shows no errors, the screenshot is drawn.

Chromium: Debian's `chromium` package (.ci/run installs it where apt is available); without it
the browser tests skip and say why.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import pytest

from simcluster.cli import main

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]
SMALL = ["--set", "workload.trace.max_requests=60", "--set", "search.gpus=[h100-sxm,l40s]",
         "--set", "search.tp=[1]", "--set", "search.capacity_requests=30", "--workers", "1"]


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plan") / "out"
    code = main(["plan", str(ROOT / "scenarios/serve-llama8b-chat.yaml"), *SMALL, "--out", str(out)])
    assert code == 0
    return out


def test_report_files_are_self_contained(report_dir):
    html = (report_dir / "report.html").read_text()
    plan = json.loads((report_dir / "plan.json").read_text())
    # No external references: every src is an inline data URI, no stylesheet or script links.
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//|file:)""", html)
    assert "<script" not in html and "<link" not in html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 4     # Pareto, latency-throughput, timeline, KV cache
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    # Every verified plan is in the ranked table; the best one is the highlighted first row.
    for row in plan["plans"]:
        assert row["plan"] in html
    assert re.search(r'<tr class="best"><td class="num">1</td><td>' + re.escape(plan["best"]["plan"]), html)
    for title in ("Ranked plans", "Pareto front", "Latency–throughput curves", "Iteration timeline",
                  "KV-cache use over time", "Assumptions"):
        assert title in html


def test_markdown_report_links_existing_figures(report_dir):
    md = (report_dir / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) >= 4
    for link in links:
        assert (report_dir / link).read_bytes()[:4] == b"\x89PNG"
    assert "| rank | plan |" in md


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    url = (report_dir / "report.html").resolve().as_uri()
    dom = _chromium(["--dump-dom", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<table") >= 2
    assert dom.stdout.count("<img") >= 4
    console = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    assert "net::ERR" not in dom.stderr       # nothing failed to load

    shot = tmp_path / "report.png"
    run = _chromium([f"--screenshot={shot}", "--window-size=1400,2000", url], tmp_path)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1400)
    # The dark header band is drawn across the top, and the page below holds drawn content
    # (tables, plots), not an empty white page.
    assert pixels[:60].mean() < 0.3
    body = pixels[150:]
    assert (body.std(axis=2) > 0.05).mean() > 0.01       # coloured plot marks
    assert (body.mean(axis=2) < 0.5).mean() > 0.005      # text and axes
