"""The memory-bound pieces of a training step that a layer microbenchmark does not cover: the
AdamW update (fused and foreach, as torch.optim runs it on fp32 parameters) and the fp32
cross-entropy over a vocabulary of logits (forward, and forward + backward), as
calibrate/llama.py's lm_loss computes it.

Both stream far more bytes than any layer op (AdamW reads parameter, gradient and both moments
and writes three of them back: 28 bytes per parameter; the loss upcasts bf16 logits to fp32 and
runs a log-softmax over them), and neither reaches the copy bandwidth a residual add does: the
optimizer's multi-tensor kernels and the softmax's row reductions run at 40-70% of HBM peak.
Timed eagerly (CUDA events around calls, median), since an optimizer step keeps host-side state.
"""

from __future__ import annotations

import torch

from calibrate.context import BenchContext
from calibrate.llama import lm_loss

ADAM_BYTES_PER_PARAM = 28          # read param, grad, exp_avg, exp_avg_sq; write param and both moments
# Parameter counts of the optimizer points: a shard of a small model up to a 1B-class model.
ADAM_PARAMS = (16 * 2**20, 64 * 2**20, 256 * 2**20, 1024 * 2**20)
# Tokens of the loss points, over Llama-3's vocabulary.
LOSS_TOKENS = (512, 2048, 8192)
VOCAB = 128256
# Tensors of a transformer's shapes: a model's parameters are many matrices, not one buffer.
MATRIX = 2048 * 8192


def _params(n: int, device) -> list[torch.nn.Parameter]:
    sizes = [MATRIX] * (n // MATRIX) + ([n % MATRIX] if n % MATRIX else [])
    out = []
    for s in sizes:
        p = torch.nn.Parameter(torch.empty(s, device=device, dtype=torch.float32).normal_(0, 0.02))
        p.grad = torch.empty_like(p).normal_(0, 1e-3)
        out.append(p)
    return out


def run(ctx: BenchContext) -> None:
    device, timer = ctx.device, ctx.timer
    cuda = device.type == "cuda"
    with ctx.table("train_kernels.csv") as out:
        for impl in (("fused", "foreach") if cuda else ("foreach",)):
            for n in ((2**16,) if ctx.smoke else ADAM_PARAMS):
                if ctx.expired():
                    ctx.skipped += 1
                    continue
                params = _params(n, device)
                kw = {"fused": True} if impl == "fused" else {"foreach": True}
                opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, **kw)
                opt.step()                       # creates the moments
                t, timing = timer.measure(lambda i: opt.step(), use_graph=False)
                out.add(op="adamw", impl=impl, elements=n, time_s=t,
                        bytes=ADAM_BYTES_PER_PARAM * n, bytes_per_s=ADAM_BYTES_PER_PARAM * n / t, timing=timing)
                params = opt = None
                timer.sync()
        vocab = 512 if ctx.smoke else VOCAB
        for tokens in ((16,) if ctx.smoke else LOSS_TOKENS):
            if ctx.expired():
                ctx.skipped += 2
                continue
            dtype = torch.bfloat16 if cuda else torch.float32
            gen = torch.Generator(device="cpu").manual_seed(tokens)
            logits = torch.randn(tokens, vocab, generator=gen).to(device=device, dtype=dtype).requires_grad_()
            targets = torch.randint(0, vocab, (tokens,), generator=gen).to(device)
            # bf16 logits read, fp32 copy written, log-softmax reads it and writes its output.
            n = tokens * vocab
            fwd, timing = timer.measure(lambda i: lm_loss(logits, targets), use_graph=False)
            out.add(op="cross_entropy_fwd", impl="lm_loss", elements=n, time_s=fwd, bytes=14 * n,
                    bytes_per_s=14 * n / fwd, timing=timing)
            both, timing = timer.measure(lambda i: torch.autograd.grad(lm_loss(logits, targets), logits),
                                         use_graph=False)
            out.add(op="cross_entropy_fwd_bwd", impl="lm_loss", elements=n, time_s=both, bytes=14 * n,
                    bytes_per_s=14 * n / both, timing=timing)
            logits = targets = None
            timer.sync()
    ctx.note(f"train_kernels: torch.optim.AdamW step (fused / foreach) over fp32 matrices of "
             f"{MATRIX} elements, {ADAM_BYTES_PER_PARAM} B per parameter; lm_loss (fp32 "
             f"cross-entropy) forward and forward + backward over {vocab} logits per token")
