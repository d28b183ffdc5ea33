"""A torch.profiler (Kineto) Chrome trace of a few DDP training steps, for trace replay.

The traced model keeps Llama-3.2-1B's widths with fewer blocks so the gzipped JSON stays a few
megabytes; the same configuration is also timed without the profiler and written to
train_step.csv, so the trace's step time can be compared with an unprofiled one.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import replace

import torch
import torch.distributed as dist

from calibrate.context import BenchContext
from calibrate.llama import LLAMA_3_2_1B, SMOKE, Llama, probe_gqa
from calibrate.strategies import wrap_ddp
from calibrate.train_step import _batch, data_parallel_step, run_strategy

TRACE_LAYERS = 4
TRACE_MICRO_BATCH = 2
TRACE_SEQ = 1024
TRACED_STEPS = 3


def trace_config(smoke: bool):
    if smoke:
        return SMOKE
    return replace(LLAMA_3_2_1B, name=f"{LLAMA_3_2_1B.name}-{TRACE_LAYERS}l", n_layers=TRACE_LAYERS)


def run(ctx: BenchContext) -> None:
    from torch.profiler import ProfilerActivity, profile
    device, rank = ctx.device, dist.get_rank()
    cfg = trace_config(ctx.smoke)
    mb, seq = (1, 16) if ctx.smoke else (TRACE_MICRO_BATCH, TRACE_SEQ)
    torch.manual_seed(0)
    model = Llama(cfg, max_pos=seq, device=device)
    model.set_gqa(probe_gqa(device))
    wrapped = wrap_ddp(model, device)
    ids, targets = _batch(cfg, mb, seq, device, seed=1)
    step = data_parallel_step(wrapped, ids, targets, device)
    for _ in range(2):
        step()
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
        torch.cuda.synchronize(device)
    dist.barrier()
    with profile(activities=activities, record_shapes=False, with_stack=False) as prof:
        for _ in range(TRACED_STEPS):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    name = f"trace_ddp_{cfg.name}.json"
    if rank == 0:
        raw = ctx.out_dir / name
        prof.export_chrome_trace(str(raw))
        with open(raw, "rb") as src, gzip.open(str(raw) + ".gz", "wb", compresslevel=9) as dst:
            shutil.copyfileobj(src, dst)
        os.remove(raw)
        size = os.path.getsize(str(raw) + ".gz")
        ctx.note(f"trace: {name}.gz from rank 0, {TRACED_STEPS} DDP steps of {cfg.name} with "
                 f"{cfg.n_layers} layers, micro_batch {mb}, seq {seq}; {size} bytes gzipped")
    del prof, step, wrapped, model
    dist.barrier()
    run_strategy(ctx, "ddp", grid=[(cfg, [(mb, seq)])],
                 detail_suffix=f"; the configuration traced in {name}.gz, timed unprofiled")

