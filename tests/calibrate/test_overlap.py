"""calibrate/overlap.py: its pure pieces, and the smoke run on two gloo ranks through the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from calibrate.table import COLUMNS, EXTRA_COLUMNS, read_table  # noqa: E402


def test_window_stats_counts_only_calls_inside_the_loop():
    pytest.importorskip("torch")
    from calibrate.overlap_clock import window_stats
    # Calls of 1, 2, 2, 2, 1 s from t=0; the compute loop runs 1..7: calls 2, 3, 4 lie inside.
    per_call, share = window_stats(1.0, 7.0, [0.0, 1.0, 3.0, 5.0, 7.0, 8.0])
    assert per_call == pytest.approx(2.0)
    assert share == 1.0
    # Collectives that end halfway through the loop cover half of it; no call lies inside, so
    # the mean of all calls stands in.
    per_call, share = window_stats(2.0, 6.0, [0.0, 1.5, 4.0])
    assert per_call == pytest.approx(2.0)
    assert share == pytest.approx(0.5)


def test_grids_are_the_llama_backward_shapes_and_fit_in_memory():
    pytest.importorskip("torch")
    from calibrate.overlap import TOKENS, collective_points, workload_points
    points = workload_points(False)
    gemms = {dims for w, dims in points if w == "gemm"}
    assert gemms == {(4096, 2048, 2048), (4096, 8192, 2048), (4096, 2048, 8192),
                     (4096, 3072, 8192)}
    assert {w for w, _ in points} == {"gemm", "elementwise", "layer_mix"}
    assert all(dims[0] == TOKENS for _, dims in points)
    # Every operand stays far below a GPU's memory: at most 64 MiB of bf16 each.
    assert max(d[0] * d[1] * 2 for _, d in points) <= 64 * 2**20
    ops = collective_points(False)
    assert {op for op, _, _ in ops} == {"all_reduce", "all_gather", "reduce_scatter"}
    assert (max(n for _, _, n in ops)) == 256 * 2**20
    assert len(collective_points(True)) == len(ops)


def test_overlap_rows_belong_to_the_overlap_section():
    pytest.importorskip("torch")
    from calibrate.multi import MULTI_SECTIONS, section_of
    assert "overlap" in MULTI_SECTIONS
    assert section_of({"workload": "gemm", "collective": "all_reduce", "world_size": "2"}) \
        == "overlap"
    assert section_of({"op": "all_reduce", "world_size": "2"}) == "collectives"


def test_smoke_overlap_on_two_gloo_ranks(tmp_path):
    """The real entry point, twice: every (workload, collective) gets one row with positive
    times, and a rerun replaces this world size's rows instead of adding to them."""
    pytest.importorskip("torch")
    from calibrate.overlap import collective_points, shape_name, workload_points
    command = [sys.executable, "-m", "calibrate", "run", "--out", str(tmp_path), "--smoke",
               "--ranks", "2", "--only", "overlap", "--device", "cpu"]
    for _ in range(2):
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = read_table(tmp_path / "overlap.csv")
    assert list(rows[0]) == COLUMNS["overlap.csv"] + EXTRA_COLUMNS["overlap.csv"]
    expected = sorted((w, shape_name(d), op, str(n)) for w, d in workload_points(True)
                      for op, _, n in collective_points(True))
    got = sorted((r["workload"], r["shape"], r["collective"], r["message_bytes"]) for r in rows)
    assert got == expected
    for r in rows:
        assert r["world_size"] == "2" and r["timing"] == "host"
        times = [float(r[c]) for c in ("alone_s", "concurrent_s", "comm_alone_s",
                                       "comm_concurrent_s", "time_s")]
        assert all(t > 0 for t in times), r
        assert float(r["slowdown"]) == pytest.approx(
            float(r["concurrent_s"]) / float(r["alone_s"]) - 1, rel=1e-3, abs=1e-4)
        assert 0 <= float(r["overlap_fraction"]) <= 1
        assert int(r["comm_calls"]) >= 1 and int(r["launches"]) >= 4
    record = yaml.safe_load((tmp_path / "provenance_multi.yaml").read_text())
    assert not [n for n in record["notes"] if "failed" in n or "skipped" in n], record["notes"]
    assert any(n.startswith("overlap ws=2:") for n in record["notes"])
