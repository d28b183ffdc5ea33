"""Attention as the plain-torch Llama decoder (calibrate/llama.py) runs it: SDPA through
`llama.attend`, with torch's DEFAULT backend choice and the GQA mode `probe_gqa` picks, on the
same prefill and decode grids as attention.py.

attention.py pins the flash backend (what a serving engine's fused kernel resembles); the model
benchmarked in model_forward.py leaves the choice to torch, which on Hopper may pick cuDNN.  These
tables price the model's own attention.  Operands have the model's memory layout: Q/K/V come out
of the projections as (batch, seq, heads, head_dim) and are transposed, decode K/V are a slice of
a longer cache.  The backend torch dispatched is read from `torch._fused_sdp_choice` for every
point (the `backend` column) and, on a GPU, the kernel names of the first point of each head
layout are recorded from a profiler trace (provenance notes).
"""

from __future__ import annotations

import torch

from calibrate.context import BenchContext
from calibrate.llama import attend, probe_gqa
from calibrate.shapes import decode_points, prefill_points
from calibrate.timing import rotation_count

# torch.nn.attention.SDPBackend values, as torch._fused_sdp_choice returns them.
BACKEND_NAMES = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}


def dispatched_backend(q, k, v, causal: bool, gqa: str) -> str:
    """The backend torch's default selection picks for these operands, e.g. 'cudnn'."""
    if gqa != "enable_gqa" and q.shape[1] != k.shape[1]:
        group = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    try:
        choice = int(torch._fused_sdp_choice(q, k, v, is_causal=causal,
                                             enable_gqa=gqa == "enable_gqa"))
    except Exception:               # a private helper: absent or changed in some torch version
        return "unknown"
    return BACKEND_NAMES.get(choice, f"choice{choice}")


def kernel_names(fn) -> list[str]:
    """Names of the GPU kernels one call of fn(0) launches (empty if the profiler fails)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn(0)
            torch.cuda.synchronize()
        return sorted({e.name for e in prof.events() if e.device_type == DeviceType.CUDA})
    except Exception:
        return []


def model_layout_sets(ctx: BenchContext, b, h, kv, q_len, kv_len, d, cache_len):
    """Rotated [q, k, v] sets as the model hands them to SDPA: (b, heads, seq, d) views of
    (b, seq, heads, d) projections for prefill; decode K/V sliced from a (b, kv, cache_len, d)
    cache (cache_len 0: K/V are projections too)."""
    if cache_len:
        shapes = [(b, q_len, h, d), (b, kv, cache_len, d), (b, kv, cache_len, d)]
    else:
        shapes = [(b, q_len, h, d), (b, kv_len, kv, d), (b, kv_len, kv, d)]
    set_bytes = 2 * (b * q_len * h * d + 2 * b * kv * kv_len * d)
    n_sets = rotation_count(set_bytes, ctx.timer.l2_bytes, max_sets=32)
    out = []
    for q, k, v in ctx.pool.sets(shapes, torch.bfloat16, n_sets):
        q = q.transpose(1, 2)
        if cache_len:
            k, v = k[:, :, :kv_len], v[:, :, :kv_len]
        else:
            k, v = k.transpose(1, 2), v.transpose(1, 2)
        out.append((q, k, v))
    return out, n_sets


def time_point(ctx: BenchContext, gqa: str, b, h, kv, q_len, kv_len, d, causal, cache_len,
               label: str, probed: set):
    """(seconds, backend, timing) of the model's SDPA call at one shape."""
    sets, n_sets = model_layout_sets(ctx, b, h, kv, q_len, kv_len, d, cache_len)

    def fn(i):
        q, k, v = sets[i]
        return attend(q, k, v, causal=causal, gqa=gqa)
    backend = dispatched_backend(*sets[0], causal, gqa)
    fn(0)
    layout = (h, kv, d, causal)
    if ctx.device.type == "cuda" and layout not in probed:
        probed.add(layout)
        names = kernel_names(fn)
        ctx.note(f"{label} h={h}/{kv} d={d} causal={causal}: backend {backend}; kernels "
                 f"{[n[:80] for n in names[:4]]}")
    t, how = ctx.timer.measure(fn, n_sets)
    return t, f"{backend}+{gqa}", how


def _sweep(ctx: BenchContext, label: str, points, row_of) -> None:
    gqa = probe_gqa(ctx.device)
    backends: dict[str, int] = {}
    probed: set = set()
    with torch.inference_mode(), ctx.table(f"{label}.csv") as out:
        for point in points:
            if ctx.expired():
                ctx.skipped += 1
                continue
            b, h, kv, q_len, kv_len, d, causal, cache_len = row_of(point)
            try:
                t, backend, how = time_point(ctx, gqa, b, h, kv, q_len, kv_len, d, causal,
                                             cache_len, label, probed)
            except Exception as exc:
                ctx.note(f"{label} {point}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120] if str(exc) else ''}")
                continue
            backends[backend] = backends.get(backend, 0) + 1
            out.add(**point_columns(label, point), backend=backend, time_s=t, timing=how)
    ctx.note(f"{label}: SDPA as calibrate/llama.py calls it (default backend choice, GQA via "
             f"{gqa}); backends used: {backends}")
    if ctx.skipped:
        ctx.note(f"{label}: time budget ran out, {ctx.skipped} points not measured")


def round_robin(points, layout_of) -> list:
    """The points with their head layouts interleaved, so a sweep cut short by its time budget
    still covers every layout (cuDNN builds a plan per new shape: slower than flash's sweep)."""
    groups: dict = {}
    for p in points:
        groups.setdefault(layout_of(p), []).append(p)
    out = []
    for i in range(max((len(g) for g in groups.values()), default=0)):
        out += [g[i] for g in groups.values() if i < len(g)]
    return out


def point_columns(label: str, point) -> dict:
    if label == "attention_prefill_sdpa":
        b, s, h, kv, d, causal = point
        return dict(batch=b, seq_len=s, n_heads=h, n_kv_heads=kv, head_dim=d, causal=causal)
    b, c, h, kv, d = point
    return dict(batch=b, context_len=c, n_heads=h, n_kv_heads=kv, head_dim=d)


def run_prefill(ctx: BenchContext) -> None:
    _sweep(ctx, "attention_prefill_sdpa", round_robin(prefill_points(ctx.smoke), lambda p: p[2:]),
           lambda p: (p[0], p[2], p[3], p[1], p[1], p[4], p[5], 0))


def run_decode(ctx: BenchContext) -> None:
    # The model's cache holds one slot more than the keys it attends over at this step.
    _sweep(ctx, "attention_decode_sdpa", round_robin(decode_points(ctx.smoke), lambda p: p[2:]),
           lambda p: (p[0], p[2], p[3], 1, p[1], p[4], False, p[1] + 1))
