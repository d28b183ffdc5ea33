"""The kernels of one decode step of the plain-torch Llama-3.1-8B (calibrate/llama.py), as the
profiler sees them: name, launches per step and device seconds per step.

model_forward.csv times the whole step; this table says where that time goes, kernel by kernel,
so a whole-model prediction can be checked op by op (which ops the microbenchmarks price well
inside the model, which kernels the op lists lack).  The step runs under the profiler eagerly
(`mode` eager) and, on a GPU, as a CUDA-graph replay (`mode` cuda_graph, as model_forward.csv
times it); kernel durations are device times, so gaps between kernels are not in them: the notes
give each mode's summed kernel time beside the span of a step.
"""

from __future__ import annotations

import gc

import torch

from calibrate.context import BenchContext
from calibrate.llama import LLAMA_3_1_8B, SMOKE, Llama, kv_caches, probe_gqa

# (batch, context_len): weight-streaming bound, and attention a large share; both in
# model_forward.csv's decode grid.
POINTS = ((1, 512), (8, 2048), (64, 2048))
STEPS = 5
NAME_CHARS = 160


def step_kernels(prof, steps: int, cuda: bool) -> dict[str, list[float]]:
    """kernel name -> [launches per step, device seconds per step]; on a CPU, aten ops instead."""
    from torch.autograd import DeviceType
    wanted = DeviceType.CUDA if cuda else DeviceType.CPU
    out: dict[str, list[float]] = {}
    for e in prof.events():
        if e.device_type != wanted or (not cuda and not e.name.startswith("aten::")):
            continue
        row = out.setdefault(e.name[:NAME_CHARS], [0.0, 0.0])
        row[0] += 1.0 / steps
        row[1] += e.time_range.elapsed_us() * 1e-6 / steps
    return out


def capture_step(model, ids, caches, c: int, device):
    """A CUDA graph of one decode step, warmed up on a side stream as torch advises."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        model.decode(ids, caches, c)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        model.decode(ids, caches, c)
    return graph


def span_s(prof, steps: int) -> float:
    """First kernel start to last kernel end over the profiled steps, per step."""
    from torch.autograd import DeviceType
    ranges = [e.time_range for e in prof.events() if e.device_type == DeviceType.CUDA]
    if not ranges:
        return 0.0
    return (max(r.end for r in ranges) - min(r.start for r in ranges)) * 1e-6 / steps


def run(ctx: BenchContext) -> None:
    from torch.profiler import ProfilerActivity, profile
    cfg = SMOKE if ctx.smoke else LLAMA_3_1_8B
    points, steps = (((1, 16), (2, 16)), 1) if ctx.smoke else (POINTS, STEPS)
    cuda = ctx.device.type == "cuda"
    dtype = torch.bfloat16
    model = Llama(cfg, max_pos=max(c for _, c in points) + 2, device=ctx.device, dtype=dtype).eval()
    gqa = probe_gqa(ctx.device)
    model.set_gqa(gqa)
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    with torch.inference_mode(), ctx.table("decode_kernels.csv") as out:
        for b, c in points:
            if ctx.expired():
                ctx.skipped += 1
                continue
            caches = kv_caches(cfg, b, c + 1, ctx.device, dtype)
            ids = torch.randint(0, cfg.vocab, (b, 1), device=ctx.device, generator=gen)
            for _ in range(3):
                model.decode(ids, caches, c)
            ctx.timer.sync()
            activity = ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU
            graph = capture_step(model, ids, caches, c, ctx.device) if cuda else None
            for mode in ("eager", "cuda_graph") if cuda else ("eager",):
                step = (lambda: model.decode(ids, caches, c)) if mode == "eager" else graph.replay
                step()
                ctx.timer.sync()
                with profile(activities=[activity]) as prof:
                    for _ in range(steps):
                        step()
                    ctx.timer.sync()
                kernels = step_kernels(prof, steps, cuda)
                for name, (calls, t) in sorted(kernels.items(), key=lambda kv: -kv[1][1]):
                    if t > 0:
                        out.add(model=cfg.name, batch=b, context_len=c, kernel=name,
                                calls_per_step=round(calls, 3), time_s=t, mode=mode)
                total = sum(t for _, t in kernels.values())
                launches = sum(n for n, _ in kernels.values())
                span = span_s(prof, steps) if cuda else 0.0
                ctx.note(f"decode_kernels {cfg.name} b={b} c={c} {mode}: {launches:.0f} kernels, "
                         f"{total * 1e3:.3f} ms kernel time and {span * 1e3:.3f} ms span per step "
                         f"(GQA via {gqa})")
            del graph, caches
            gc.collect()
    del model
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
