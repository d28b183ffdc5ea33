"""The multi-GPU part: one process per rank (torch.multiprocessing.spawn), NCCL on GPUs and gloo
on a CPU.  The parent first times device-to-device copies between every GPU pair from one
process; then each world size gets its own group of ranks, and rank 0 writes the tables and
provenance_multi.yaml after every section."""

from __future__ import annotations

import datetime
import json
import os
import socket
import time
import traceback
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist

from calibrate import collectives, overlap, provenance, trace
from calibrate.context import make_context
from calibrate.runner import previous_record, run_section, select
from calibrate.train_step import run_strategy

# name: (function of a BenchContext, time budget in seconds). Calibration proper is collectives
# (and p2p, overlap): about 2 minutes a world size. The training grids are validation, timed until
# known (calibrate/step_timing.py): their budgets hold what H200s of 2 and 4 ranks took (DDP 43-66 s,
# FSDP with its balance probe 131 s, TP 220 s, the pipeline 80-109 s), about 11 minutes a world size.
MULTI_SECTIONS = {
    "collectives": (collectives.run, 70),
    "train_ddp": (partial(run_strategy, strategy="ddp"), 100),
    "train_fsdp": (partial(run_strategy, strategy="fsdp"), 160),
    "train_tp": (partial(run_strategy, strategy="tp"), 240),
    "train_pp": (partial(run_strategy, strategy="pp"), 130),
    "trace": (trace.run, 40),
    # Compute beside a collective on another stream: about 15-20 s on H200s at 2 or 4 ranks.
    "overlap": (overlap.run, 30),
}
# A hung collective (one rank failed alone) ends the run after this long instead of never.
GROUP_TIMEOUT_S = 180
# NVLink multicast stays off on shared hosts; see the lent machines' notes.
SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
            "NVSHMEM_DISABLE_NVLS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin_cpus(rank: int, world: int) -> None:
    """Give each rank its own share of this process's CPUs, so ranks' Python threads neither
    migrate nor share cores (host-bound steps otherwise jitter by tens of percent)."""
    if not hasattr(os, "sched_getaffinity"):
        return
    allowed = sorted(os.sched_getaffinity(0))
    share = len(allowed) // world
    if share >= 2:
        os.sched_setaffinity(0, allowed[rank * share:(rank + 1) * share])


def _worker(rank: int, world: int, out_dir: str, names: list[str], smoke: bool, port: int,
            budget_scale: float, use_cuda: bool, record: dict) -> None:
    os.environ.update(SAFE_ENV)
    pin_cpus(rank, world)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if use_cuda:
        torch.cuda.set_device(rank)
        device, backend = torch.device(f"cuda:{rank}"), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=GROUP_TIMEOUT_S))
    ctx = make_context(device, Path(out_dir), smoke, pool_elements=2**20)
    ctx.rank = rank
    flag = torch.zeros(1, dtype=torch.int32, device=device)

    def agree(local: bool) -> bool:
        flag.fill_(int(local))
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())
    ctx.agree = agree
    # Replace only the rows this run re-measures: same world size, section among `names`.
    ctx.keep_rows = lambda row: (row.get("world_size") not in (None, str(world))
                                 or section_of(row) not in names)
    ctx.notes = list(record["notes"])
    walls = dict(record["section_wall_s"])
    t0 = time.monotonic()
    for name in names:
        fn, budget = MULTI_SECTIONS[name]
        wall = run_section(ctx, name, fn, float("inf") if smoke else budget * budget_scale)
        walls[f"{name}_ws{world}"] = round(wall, 2)
        if rank == 0:
            record = {**record, "section_wall_s": walls, "notes": ctx.notes,
                      "total_wall_s": round(record["total_wall_s"] + time.monotonic() - t0, 2)}
            _write(Path(out_dir), record)
        dist.barrier()
    dist.destroy_process_group()


def section_of(row: dict) -> str:
    """The multi-GPU section that writes a row of collectives.csv, train_step.csv or
    overlap.csv."""
    if "workload" in row:
        return "overlap"
    if "strategy" not in row:
        return "collectives"
    if row.get("detail", "").endswith("timed unprofiled"):
        return "trace"
    return f"train_{row['strategy']}"


def _write(out_dir: Path, record: dict) -> None:
    provenance.write(out_dir / "provenance_multi.yaml", record)
    (out_dir / ".provenance_multi.json").write_text(json.dumps(record))


def run_multi(out_dir: Path, worlds: list[int], only: list[str] | None, smoke: bool,
              device_name: str | None, budget_scale: float = 1.0) -> int:
    """p2p copies, then the multi-rank sections at every world size in `worlds`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.update(SAFE_ENV)
    names = select({"p2p": None, **MULTI_SECTIONS}, only)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    use_cuda = torch.cuda.is_available() and (device_name or "cuda").startswith("cuda")
    env = provenance.environment()
    n_gpus = torch.cuda.device_count() if use_cuda else 0
    old = previous_record(out_dir / "provenance_multi.yaml") if only else {}
    old_total = float(old.get("total_wall_s") or 0.0)
    record = provenance.build(env, provenance.command_line(),
                              dict(old.get("section_wall_s") or {}), old_total,
                              list(old.get("notes") or []), started)
    record["world_sizes"] = ",".join(str(w) for w in worlds)
    if old:
        record["notes"].append(f"rerun {started:%Y-%m-%d %H:%M} UTC of {only}: "
                               f"`{record['command']}`; earlier command `{old.get('command')}`")
    if "p2p" in names:
        record = _run_p2p(out_dir, smoke, use_cuda, n_gpus, record, budget_scale)
        names.remove("p2p")
    _write(out_dir, record)
    for world in worlds:
        if use_cuda and world > n_gpus:
            record["notes"].append(f"world size {world} skipped: only {n_gpus} GPUs")
            continue
        try:
            torch.multiprocessing.spawn(
                _worker, args=(world, str(out_dir), names, smoke, free_port(), budget_scale,
                               use_cuda, record), nprocs=world, join=True)
        except Exception as exc:
            traceback.print_exc()
            record = json.loads((out_dir / ".provenance_multi.json").read_text())
            record["notes"].append(f"world size {world}: a rank failed: {type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:200] if str(exc) else ''}")
        record = json.loads((out_dir / ".provenance_multi.json").read_text())
    record["total_wall_s"] = round(old_total + time.monotonic() - t0, 2)
    _write(out_dir, record)
    (out_dir / ".provenance_multi.json").unlink()
    print(f"done in {time.monotonic() - t0:.1f} s; wrote {out_dir}", flush=True)
    return 0


def _run_p2p(out_dir, smoke, use_cuda, n_gpus, record, budget_scale) -> dict:
    device = torch.device("cuda:0" if use_cuda else "cpu")
    ctx = make_context(device, out_dir, smoke, pool_elements=2**20)
    ctx.notes = record["notes"]
    if use_cuda and n_gpus >= 2:
        devices = [torch.device(f"cuda:{i}") for i in range(n_gpus)]
        ctx.note(f"p2p: copy_ between {n_gpus} GPUs from one process; peer access "
                 f"{[torch.cuda.can_device_access_peer(0, i) for i in range(1, n_gpus)]}")
    elif smoke:
        devices = [torch.device("cpu"), torch.device("cpu")]
    else:
        devices = []
        ctx.note("p2p: fewer than two GPUs, no copies measured")
    wall = run_section(ctx, "p2p", lambda c: collectives.run_p2p_copy(c, devices),
                       float("inf") if smoke else 20 * budget_scale) if devices else 0.0
    del ctx
    if use_cuda:
        torch.cuda.empty_cache()
    return {**record, "section_wall_s": {**record["section_wall_s"], "p2p": round(wall, 2)},
            "total_wall_s": round(wall, 2)}
