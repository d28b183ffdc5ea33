"""Attention through torch's scaled_dot_product_attention: prefill (causal, q = kv length) and
decode (one query token per sequence against a KV cache), bf16, grouped-query heads.

Backends are tried in order and the first that runs is recorded in the `backend` column:
flash with enable_gqa=True (native GQA), flash on K/V repeated to the query head count outside
the timed region (GQA cost then excludes the repeat), and torch's default choice.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibrate.context import BenchContext
from calibrate.shapes import decode_points, prefill_points
from calibrate.timing import rotation_count

BACKENDS = ("flash+enable_gqa", "flash+repeat_kv", "default+enable_gqa")


def _kernel_context(backend: str):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    if backend.startswith("flash"):
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                        SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def attention_call(backend: str, sets, causal: bool):
    """fn(i) running SDPA on sets[i] = [q, k, v] (k, v already repeated for repeat_kv)."""
    gqa = backend.endswith("enable_gqa")

    def fn(i):
        q, k, v = sets[i]
        with _kernel_context(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
    return fn


def make_sets(ctx: BenchContext, backend: str, b: int, h: int, kv: int, q_len: int,
              kv_len: int, d: int):
    """Rotated [q, k, v] sets in (batch, heads, seq, head_dim) layout."""
    kv_heads = h if backend == "flash+repeat_kv" else kv
    shapes = [(b, h, q_len, d), (b, kv_heads, kv_len, d), (b, kv_heads, kv_len, d)]
    set_bytes = 2 * sum(x[0] * x[1] * x[2] * x[3] for x in shapes)
    n_sets = rotation_count(set_bytes, ctx.timer.l2_bytes, max_sets=32)
    return ctx.pool.sets(shapes, torch.bfloat16, n_sets), n_sets


def time_attention(ctx: BenchContext, b, h, kv, q_len, kv_len, d, causal):
    """(seconds, backend, timing) with the first backend that runs; raises if none does."""
    last = None
    for backend in BACKENDS:
        if backend == "flash+repeat_kv" and h == kv:
            continue
        try:
            sets, n_sets = make_sets(ctx, backend, b, h, kv, q_len, kv_len, d)
            attention_call(backend, sets, causal)(0)
            t, how = ctx.timer.measure(attention_call(backend, sets, causal), n_sets)
            return t, backend, how
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            last = exc
    raise RuntimeError(f"no SDPA backend ran: {last}")


def run_prefill(ctx: BenchContext) -> None:
    backends: dict[str, int] = {}
    with ctx.table("attention_prefill.csv") as out:
        for b, s, h, kv, d, causal in prefill_points(ctx.smoke):
            if ctx.expired():
                ctx.skipped += 1
                continue
            try:
                t, backend, how = time_attention(ctx, b, h, kv, s, s, d, causal)
            except Exception as exc:
                ctx.note(f"attention_prefill b={b} s={s} h={h}/{kv} d={d}: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
                continue
            backends[backend] = backends.get(backend, 0) + 1
            out.add(batch=b, seq_len=s, n_heads=h, n_kv_heads=kv, head_dim=d, causal=causal,
                    backend=backend, time_s=t, timing=how)
    ctx.note(f"attention_prefill backends used: {backends}")
    if ctx.skipped:
        ctx.note(f"attention_prefill: time budget ran out, {ctx.skipped} points not measured")


def run_decode(ctx: BenchContext) -> None:
    backends: dict[str, int] = {}
    with ctx.table("attention_decode.csv") as out:
        for b, c, h, kv, d in decode_points(ctx.smoke):
            if ctx.expired():
                ctx.skipped += 1
                continue
            try:
                t, backend, how = time_attention(ctx, b, h, kv, 1, c, d, False)
            except Exception as exc:
                ctx.note(f"attention_decode b={b} ctx={c} h={h}/{kv} d={d}: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
                continue
            backends[backend] = backends.get(backend, 0) + 1
            out.add(batch=b, context_len=c, n_heads=h, n_kv_heads=kv, head_dim=d,
                    backend=backend, time_s=t, timing=how)
    ctx.note(f"attention_decode backends used: {backends}")
    if ctx.skipped:
        ctx.note(f"attention_decode: time budget ran out, {ctx.skipped} points not measured")
