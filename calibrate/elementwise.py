"""Memory-bound layer pieces in eager torch: norms, activations, RoPE, residual add, embedding
lookup and sampling.  Each is the plain-torch form a framework without fused kernels runs; the
`impl` column names it.  Timed by graph replay, so the numbers are GPU time without launch gaps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibrate.context import BenchContext
from calibrate.shapes import elementwise_points
from calibrate.timing import rotation_count

HEAD_DIM = 128
ROPE_KV_HEADS = 8
TOP_P = 0.9


def rope(q, k, cos, sin):
    """Rotary embedding, rotate-half form (Su et al. 2021, RoFormer eq. 34), on q and k."""
    def rotate(x):
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin
    return rotate(q), rotate(k)


def top_p_sample(logits, top_p: float = TOP_P):
    """Nucleus sampling (Holtzman et al. 2020): smallest set of tokens holding `top_p` mass."""
    probs = torch.softmax(logits.float(), dim=-1)
    sorted_p, order = torch.sort(probs, dim=-1, descending=True)
    keep = sorted_p.cumsum(-1) - sorted_p < top_p
    sorted_p = sorted_p * keep
    choice = torch.multinomial(sorted_p, 1)
    return order.gather(-1, choice)


def op_spec(op: str, tokens: int, hidden: int, device, vocab: int = 128256):
    """(input shapes, fixed extra tensors, fn(*inputs, *extras), impl name) of one op."""
    t, h = tokens, hidden
    ones = lambda n: torch.ones(n, device=device, dtype=torch.bfloat16)  # noqa: E731
    if op == "rmsnorm":
        return [(t, h)], [ones(h)], lambda x, w: F.rms_norm(x, (h,), w, 1e-5), "F.rms_norm"
    if op == "layernorm":
        return ([(t, h)], [ones(h), ones(h)],
                lambda x, w, b: F.layer_norm(x, (h,), w, b, 1e-5), "F.layer_norm")
    if op == "silu_mul":
        return ([(t, 2 * h)], [], lambda x: F.silu(x[:, :h]) * x[:, h:],
                "silu(x[:, :h]) * x[:, h:]")
    if op == "gelu":
        return [(t, h)], [], lambda x: F.gelu(x, approximate="tanh"), "F.gelu(tanh)"
    if op == "rope":
        n_q = h // HEAD_DIM
        angle = torch.rand(t, 1, HEAD_DIM, device=device)
        cos, sin = angle.cos().to(torch.bfloat16), angle.sin().to(torch.bfloat16)
        return ([(t, n_q, HEAD_DIM), (t, ROPE_KV_HEADS, HEAD_DIM)], [cos, sin], rope,
                "rotate_half q,k (8 kv heads, head_dim 128)")
    if op == "residual_add":
        return [(t, h), (t, h)], [], torch.add, "torch.add"
    if op == "embedding":
        ids = torch.randint(0, vocab, (t,), device=device)
        return [(vocab, h)], [ids], lambda table, i: F.embedding(i, table), \
            f"F.embedding (vocab {vocab})"
    if op == "sampling":
        return [(t, h)], [], top_p_sample, f"softmax+sort+top_p({TOP_P})+multinomial"
    if op == "argmax":
        return [(t, h)], [], lambda x: torch.argmax(x, dim=-1), "argmax"
    raise ValueError(f"elementwise: unknown op {op!r}")


def run(ctx: BenchContext) -> None:
    with ctx.table("elementwise.csv") as out:
        for op, tokens, hidden in elementwise_points(ctx.smoke):
            if ctx.expired():
                ctx.skipped += 1
                continue
            shapes, extras, fn, impl = op_spec(op, tokens, hidden, ctx.device,
                                               vocab=512 if ctx.smoke else 128256)
            set_bytes = 2 * sum(s[0] * s[1] * (s[2] if len(s) > 2 else 1) for s in shapes)
            if op == "embedding":     # a lookup reads only `tokens` rows of the table
                set_bytes = 2 * tokens * hidden
            n_sets = rotation_count(set_bytes, ctx.timer.l2_bytes, max_sets=32)
            sets = ctx.pool.sets(shapes, n_sets=n_sets)
            try:
                t, how = ctx.timer.measure(lambda i: fn(*sets[i], *extras), n_sets)
            except Exception as exc:
                ctx.note(f"elementwise {op} t={tokens} h={hidden}: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:120]}")
                continue
            out.add(op=op, tokens=tokens, hidden=hidden, time_s=t, impl=impl, timing=how)
    if ctx.skipped:
        ctx.note(f"elementwise: time budget ran out, {ctx.skipped} points not measured")
