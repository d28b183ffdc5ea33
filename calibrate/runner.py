"""Runs the single-GPU sections in order, each under its own time budget, and writes
provenance.yaml after every section (so a run stopped from outside still says what it did)."""

from __future__ import annotations

import datetime
import gc
import time
import traceback
from pathlib import Path

import torch

from calibrate import (attention, attention_sdpa, decode_kernels, elementwise, gemm, graph_gap,
                       kernel_switch, launch, memcpy, model_forward, moe, provenance, train_kernels,
                       train_step)
from calibrate.context import BenchContext, make_context

# name: (function of a BenchContext, time budget in seconds for the full sweep).  The budgets
# sum to 13 minutes, so one GPU type is calibrated in under 15 (H100: 9.3 minutes measured). The
# whole-model and training-step sections time their points until known (calibrate/step_timing.py):
# their budgets hold that on an H100 (model_forward took 230 s there, 94 s on an H200).
SINGLE_SECTIONS = {
    "gemm": (gemm.run, 150),
    "attention_prefill": (attention.run_prefill, 45),
    "attention_decode": (attention.run_decode, 30),
    # The same grids through SDPA as the model benchmark calls it (default backend choice).
    "attention_prefill_sdpa": (attention_sdpa.run_prefill, 45),
    "attention_decode_sdpa": (attention_sdpa.run_decode, 35),
    "gemm_misaligned": (gemm.run_misaligned, 6),
    "decode_kernels": (decode_kernels.run, 10),
    "kernel_switch": (kernel_switch.run, 5),
    "graph_gap": (graph_gap.run, 10),
    "moe": (moe.run, 40),
    "router": (moe.run_router, 8),
    "elementwise": (elementwise.run, 30),
    "launch": (launch.run, 5),
    "memcpy": (memcpy.run, 15),
    "model_forward": (model_forward.run, 240),
    "train_kernels": (train_kernels.run, 15),
    "train_single": (train_step.run_single, 90),
}


class SectionError(ValueError):
    """--only named a section that does not exist."""


def select(sections: dict, only: list[str] | None) -> list[str]:
    """Section names to run, in registry order; unknown names raise SectionError."""
    if not only:
        return list(sections)
    unknown = [name for name in only if name not in sections]
    if unknown:
        raise SectionError(f"--only: unknown section(s) {unknown}; expected some of "
                           f"{list(sections)}")
    return [name for name in sections if name in only]


def run_section(ctx: BenchContext, name: str, fn, budget_s: float) -> float:
    """Run one section, recording a failure as a note instead of stopping the suite."""
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {name} "
          f"(budget {budget_s:.0f} s)", flush=True)
    ctx.with_deadline(budget_s)
    t0 = time.monotonic()
    try:
        fn(ctx)
    except Exception as exc:
        traceback.print_exc()
        ctx.note(f"{name} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                 if str(exc) else f"{name} failed: {type(exc).__name__}")
    wall = time.monotonic() - t0
    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
        torch.cuda.empty_cache()
    print(f"  {name}: {wall:.1f} s", flush=True)
    return wall


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def previous_record(path: Path) -> dict:
    """An earlier provenance record to merge a partial (--only) rerun into, if one is there."""
    if not path.exists():
        return {}
    try:
        import yaml
    except ImportError:
        return {}
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def run_suite(out_dir: Path, only: list[str] | None, smoke: bool, device_name: str | None,
              budget_scale: float = 1.0) -> int:
    """All (or the `only`) single-GPU sections into out_dir; returns a process exit code."""
    names = select(SINGLE_SECTIONS, only)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    device = pick_device(device_name)
    env = provenance.environment()
    ctx = make_context(device, out_dir, smoke)
    # Multi-GPU runs put rows of other world sizes into train_step.csv: keep them.
    ctx.keep_rows = lambda row: row.get("world_size") not in (None, "1")
    prov_path = out_dir / "provenance.yaml"
    old = previous_record(prov_path) if only else {}
    walls = dict(old.get("section_wall_s") or {})
    notes = list(old.get("notes") or [])
    start_notes = len(notes)
    ctx.notes = notes
    ctx.note(f"timing: CUDA events, median of batches; random (randn) inputs as disjoint views "
             f"of a bf16 pool, rotated over 2x L2 ({ctx.timer.l2_bytes} bytes) or 64 sets; graph "
             f"replay where capturable (column `timing`)"
             if device.type == "cuda" else "timing: host clock (no CUDA device)")
    for name in names:
        fn, budget = SINGLE_SECTIONS[name]
        walls[name] = run_section(ctx, name, fn, float("inf") if smoke else budget * budget_scale)
        failures = sorted(set(ctx.timer.graph_failures))
        ctx.timer.graph_failures.clear()
        if failures:
            ctx.note(f"{name}: graph capture fell back to eager for: {failures[:3]}")
        record = provenance.build(env, provenance.command_line(), walls,
                                  time.monotonic() - t0, notes, started)
        provenance.write(prov_path, record)
    if only and old:
        # A section measured again replaces its earlier rows: its earlier wall time leaves the
        # total, which stays the wall time of the measurements the folder holds.
        replaced = sum(float((old.get("section_wall_s") or {}).get(n, 0.0)) for n in names)
        record["total_wall_s"] = round(float(old.get("total_wall_s", 0)) - replaced +
                                       time.monotonic() - t0, 2)
        record["notes"] = notes[:start_notes] + [f"rerun {started:%Y-%m-%d}: {n}"
                                                 for n in notes[start_notes:]]
        provenance.write(prov_path, record)
    print(f"done in {time.monotonic() - t0:.1f} s; wrote {out_dir}", flush=True)
    return 0
