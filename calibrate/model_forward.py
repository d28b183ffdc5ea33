"""Whole-model forward passes of the plain-torch Llama decoder: prefill and decode iterations.

These are validation points for whole-iteration predictions.  Prefill runs the prompt of every
sequence and computes last-position logits; decode runs one new token per sequence against a
KV cache filled to `context_len`.  Decode is timed eager (launch gaps included, as a framework
without graphs sees it) and as a CUDA-graph replay (what a serving engine with graphs sees).
"""

from __future__ import annotations

import gc

import torch

from calibrate.context import BenchContext
from calibrate.llama import (LLAMA_3_1_8B, LLAMA_3_2_1B, LLAMA_3_2_3B, SMOKE, Llama,
                             LlamaConfig, kv_bytes_per_token, kv_caches, probe_gqa)

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


def run_model(ctx: BenchContext, cfg: LlamaConfig, prefill, batches, contexts, out, gqa) -> None:
    dtype = torch.bfloat16
    max_ctx = max(contexts) + 1
    max_pos = max(max_ctx, max(s for _, s in prefill))
    model = Llama(cfg, max_pos=max_pos, device=ctx.device, dtype=dtype).eval()
    model.set_gqa(gqa)
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    with torch.inference_mode():
        for b, s in prefill:
            if ctx.expired():
                ctx.skipped += 1
                continue
            ids = torch.randint(0, cfg.vocab, (b, s), device=ctx.device, generator=gen)
            try:
                t, _ = ctx.timer.measure(lambda i: model.prefill(ids), 1, use_graph=False)
            except torch.cuda.OutOfMemoryError:
                ctx.note(f"model_forward {cfg.name} prefill {b}x{s}: out of memory")
                continue
            out.add(model=cfg.name, phase="prefill", batch=b, seq_len=s, context_len=0,
                    mode="eager", time_s=t, n_layers=cfg.n_layers, gqa=gqa)
        for b in batches:
            fits = [c for c in contexts
                    if b * (c + 1) * kv_bytes_per_token(cfg) < free_bytes(ctx.device)
                    - HEADROOM_BYTES]
            if not fits or ctx.expired():
                ctx.skipped += len(contexts)
                continue
            caches = kv_caches(cfg, b, max(fits) + 1, ctx.device, dtype)
            ids = torch.randint(0, cfg.vocab, (b, 1), device=ctx.device, generator=gen)
            for c in fits:
                for mode in ("eager", "cuda_graph"):
                    if ctx.expired() or (mode == "cuda_graph" and ctx.device.type != "cuda"):
                        continue
                    t, how = ctx.timer.measure(lambda i: model.decode(ids, caches, c), 1,
                                               use_graph=mode == "cuda_graph")
                    if mode == "cuda_graph" and how != "graph":
                        ctx.note(f"model_forward {cfg.name} decode b={b} c={c}: graph capture "
                                 f"failed; {ctx.timer.graph_failures[-1:]}")
                        continue
                    out.add(model=cfg.name, phase="decode", batch=b, seq_len=1, context_len=c,
                            mode=mode, time_s=t, n_layers=cfg.n_layers, gqa=gqa)
            del caches
            gc.collect()
    del model
    gc.collect()
    if ctx.device.type == "cuda":
        torch.cuda.empty_cache()


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
