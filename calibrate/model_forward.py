"""Whole-model forward passes of the plain-torch Llama decoder: prefill and decode iterations.

These are validation points for whole-iteration predictions.  Prefill runs the prompt of every
sequence and computes last-position logits; decode runs one new token per sequence against a
KV cache filled to `context_len`.  Every point is timed eager (launch gaps included, as a
framework without graphs sees it: a model's points interleaved and timed until known, the host's
issue time beside each, as training steps are) and decode also as a CUDA-graph replay (what a
serving engine with graphs sees).
"""

from __future__ import annotations

import torch

from calibrate.context import BenchContext
from calibrate.llama import (LLAMA_3_1_8B, LLAMA_3_2_1B, LLAMA_3_2_3B, SMOKE, Llama,
                             LlamaConfig, kv_bytes_per_token, probe_gqa)
from calibrate.step_timing import cleanup, time_interleaved

PREFILL = ((1, 128), (1, 512), (1, 2048), (4, 1024), (16, 512), (8, 2048), (1, 8192),
           (32, 256), (2, 4096))
DECODE_BATCH = (1, 8, 32, 64, 128)
DECODE_CONTEXT = (512, 2048, 8192)
# Leave room for activations, logits and the allocator's slack beside weights and KV cache.
HEADROOM_BYTES = 8 * 2**30


def forward_grid(smoke: bool):
    """[(config, prefill (batch, seq) list, decode batches, decode contexts)], most wanted first."""
    if smoke:
        return [(SMOKE, ((1, 16), (2, 8)), (1, 2), (16, 32))]
    return [
        (LLAMA_3_1_8B, PREFILL, DECODE_BATCH, DECODE_CONTEXT),
        (LLAMA_3_2_1B, PREFILL[:7], DECODE_BATCH, DECODE_CONTEXT),
        (LLAMA_3_2_3B, PREFILL[:7], DECODE_BATCH, DECODE_CONTEXT),
    ]


def free_bytes(device) -> int:
    if device.type != "cuda":
        return 2**40
    free, _ = torch.cuda.mem_get_info(device)
    return free


def decode_points(cfg: LlamaConfig, batches, contexts, free: int) -> list:
    """(batch, context) decode points whose KV cache fits beside the weights and HEADROOM_BYTES."""
    return [(b, c) for b in batches for c in contexts
            if b * (c + 1) * kv_bytes_per_token(cfg) < free - HEADROOM_BYTES]


def flat_caches(cfg: LlamaConfig, tokens: int, device, dtype):
    """Per layer a flat K and a flat V buffer of `tokens` positions (random values), which every
    decode point views as its own (batch, kv_heads, context + 1, head_dim) cache: all of a
    model's decode points live at once, so they can be timed interleaved."""
    n = tokens * cfg.n_kv_heads * cfg.head_dim
    return [(torch.randn(n, device=device, dtype=dtype), torch.randn(n, device=device, dtype=dtype))
            for _ in range(cfg.n_layers)]


def cache_view(flat, cfg: LlamaConfig, batch: int, context: int):
    shape = (batch, cfg.n_kv_heads, context + 1, cfg.head_dim)
    n = shape[0] * shape[1] * shape[2] * shape[3]
    return [(k[:n].view(shape), v[:n].view(shape)) for k, v in flat]


def run_model(ctx: BenchContext, cfg: LlamaConfig, prefill, batches, contexts, out, gqa) -> None:
    """Eager rows: every prefill and decode point of the model timed interleaved until its median
    is known (calibrate/step_timing.py: one call per round, synchronized before and after, as a
    serving engine's iteration ends on its sampled tokens), with the host's issue time beside it.
    Then the decode points as CUDA-graph replays (ctx.timer)."""
    dtype = torch.bfloat16
    max_pos = max(max(contexts) + 1, max(s for _, s in prefill))
    model = Llama(cfg, max_pos=max_pos, device=ctx.device, dtype=dtype).eval()
    model.set_gqa(gqa)
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    with torch.inference_mode():
        decode = decode_points(cfg, batches, contexts, free_bytes(ctx.device))
        flat = flat_caches(cfg, max(b * (c + 1) for b, c in decode), ctx.device, dtype) if decode else []
        points, makers = [], []
        for b, s in prefill:
            ids = torch.randint(0, cfg.vocab, (b, s), device=ctx.device, generator=gen)
            points.append(("prefill", b, s, 0))
            makers.append((cfg.name, lambda ids=ids, m=model: (lambda: m.prefill(ids))))
        for b, c in decode:
            ids = torch.randint(0, cfg.vocab, (b, 1), device=ctx.device, generator=gen)
            caches = cache_view(flat, cfg, b, c)
            points.append(("decode", b, 1, c))
            makers.append((cfg.name, lambda ids=ids, caches=caches, c=c, m=model: (lambda: m.decode(ids, caches, c))))
        timings = time_interleaved(makers, ctx.device, ctx.smoke, ctx.deadline_s, retire=True)
        for (phase, b, s, c), t in zip(points, timings):
            if isinstance(t, str):
                ctx.note(f"model_forward {cfg.name} {phase} b={b} s={s} c={c} eager: {t}")
                continue
            busy = t.device
            out.add(model=cfg.name, phase=phase, batch=b, seq_len=s, context_len=c, mode="eager",
                    time_s=t.time_s, n_layers=cfg.n_layers, gqa=gqa, host_s=t.host_s,
                    time_ci_low_s=t.ci_low_s, time_ci_high_s=t.ci_high_s, timed_steps=t.steps,
                    device_compute_s=busy.compute_s if busy else None,
                    kernels_per_step=busy.kernels if busy else None)
        cleanup(ctx.device)
        for b, c in decode:
            if ctx.device.type != "cuda":
                continue
            if ctx.expired():
                ctx.skipped += 1
                continue
            ids = torch.randint(0, cfg.vocab, (b, 1), device=ctx.device, generator=gen)
            caches = cache_view(flat, cfg, b, c)
            t, how = ctx.timer.measure(lambda i, ids=ids, caches=caches, c=c, m=model: m.decode(ids, caches, c), 1,
                                       use_graph=True)
            if how != "graph":
                ctx.note(f"model_forward {cfg.name} decode b={b} c={c}: graph capture "
                         f"failed; {ctx.timer.graph_failures[-1:]}")
                continue
            out.add(model=cfg.name, phase="decode", batch=b, seq_len=1, context_len=c,
                    mode="cuda_graph", time_s=t, n_layers=cfg.n_layers, gqa=gqa, host_s=None,
                    time_ci_low_s=None, time_ci_high_s=None, timed_steps=None, device_compute_s=None,
                    kernels_per_step=None)
        del flat
    del model
    cleanup(ctx.device)


def run(ctx: BenchContext) -> None:
    gqa = probe_gqa(ctx.device)
    ctx.note(f"model_forward: GQA via {gqa}; separate q/k/v and gate/up projections; "
             f"prefill computes last-position logits only")
    with ctx.table("model_forward.csv") as out:
        for cfg, prefill, batches, contexts in forward_grid(ctx.smoke):
            if ctx.expired():
                ctx.note(f"model_forward: time budget ran out before {cfg.name}")
                continue
            run_model(ctx, cfg, prefill, batches, contexts, out, gqa)
    if ctx.skipped:
        ctx.note(f"model_forward: time budget or memory left {ctx.skipped} points unmeasured")
