"""MoE: the grouped expert FFN (SwiGLU) over uneven tokens per expert, and the router.

Expert popularity is drawn from a Dirichlet distribution with a fixed seed; each token then picks
top_k distinct experts in proportion to it.  A GPU holding `n_local` of the experts computes only
the assignments that land on them.  Two implementations are timed where they run: a loop of
per-expert GEMMs (what a plain framework does) and torch._grouped_mm (one grouped kernel per
projection, as fused MoE kernels do).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibrate.context import BenchContext
from calibrate.shapes import MoeDims, moe_points, router_points
from calibrate.timing import rotation_count


def expert_counts(n_experts: int, n_local: int, top_k: int, tokens: int, alpha: float,
                  seed: int = 0) -> list[int]:
    """Assignments per local expert: Dirichlet(alpha) popularity, top_k distinct picks a token."""
    gen = torch.Generator().manual_seed(seed)
    gamma = torch._standard_gamma(torch.full((n_experts,), float(alpha), dtype=torch.float64),
                                  generator=gen)
    popularity = (gamma / gamma.sum()).float().clamp_min(1e-12)
    picks = torch.multinomial(popularity.expand(tokens, n_experts), top_k, replacement=False,
                              generator=gen)
    counts = torch.bincount(picks.flatten(), minlength=n_experts)
    return [int(c) for c in counts[:n_local]]


def imbalance(counts: list[int]) -> float:
    """max / mean assignments per expert: 1.0 is a perfectly even split."""
    mean = sum(counts) / len(counts)
    return max(counts) / mean if mean > 0 else float("nan")


def loop_ffn(x, w1, w2, counts: list[int], out):
    """SwiGLU experts one after another: out[rows of e] = (silu(x W1g) * x W1u) W2 per expert."""
    ffn = w2.shape[2]
    start = 0
    for e, c in enumerate(counts):
        if c == 0:
            continue
        h = torch.mm(x[start:start + c], w1[e].t())
        act = F.silu(h[:, :ffn]) * h[:, ffn:]
        torch.mm(act, w2[e].t(), out=out[start:start + c])
        start += c
    return out


def grouped_ffn(x, w1, w2, offsets):
    """The same FFN with one grouped GEMM per projection (torch._grouped_mm, offsets int32)."""
    ffn = w2.shape[2]
    h = torch._grouped_mm(x, w1.transpose(-2, -1), offs=offsets)
    act = F.silu(h[:, :ffn]) * h[:, ffn:]
    return torch._grouped_mm(act, w2.transpose(-2, -1), offs=offsets)


def _measure_point(ctx: BenchContext, dims: MoeDims, counts: list[int], grouped_ok: dict):
    """[(impl, seconds, timing)] for every implementation that runs on these counts."""
    rows = sum(counts)
    n_sets = rotation_count(2 * rows * dims.hidden, ctx.timer.l2_bytes, max_sets=8)
    w_shape = [(dims.n_local, 2 * dims.expert_ffn, dims.hidden),
               (dims.n_local, dims.hidden, dims.expert_ffn)]
    # One set holding weights and every rotated input, so none of them overlap.
    w1, w2, *xs = ctx.pool.sets(w_shape + [(rows, dims.hidden)] * n_sets)[0]
    out = torch.empty(rows, dims.hidden, device=ctx.device, dtype=torch.bfloat16)
    results = []
    t, how = ctx.timer.measure(lambda i: loop_ffn(xs[i], w1, w2, counts, out), n_sets)
    results.append(("loop_mm", t, how))
    if hasattr(torch, "_grouped_mm") and grouped_ok.get(dims.name, True):
        offsets = torch.tensor(counts, device=ctx.device).cumsum(0).to(torch.int32)
        try:
            grouped_ffn(xs[0], w1, w2, offsets)
            t, how = ctx.timer.measure(lambda i: grouped_ffn(xs[i], w1, w2, offsets), n_sets)
            results.append(("grouped_mm", t, how))
        except Exception as exc:
            grouped_ok[dims.name] = False
            ctx.note(f"moe: torch._grouped_mm failed for {dims.name}: "
                     f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
    return results


def run(ctx: BenchContext) -> None:
    grouped_ok: dict[str, bool] = {}
    with ctx.table("moe.csv") as out:
        for dims, tokens, alpha in moe_points(ctx.smoke):
            if ctx.expired():
                ctx.skipped += 1
                continue
            counts = expert_counts(dims.n_experts, dims.n_local, dims.top_k, tokens, alpha)
            if sum(counts) == 0:
                continue    # no assignment landed on this GPU's experts
            results = _measure_point(ctx, dims, counts, grouped_ok)
            for impl, t, how in results:
                out.add(tokens=tokens, n_experts=dims.n_local, top_k=dims.top_k,
                        hidden=dims.hidden, expert_ffn=dims.expert_ffn,
                        imbalance=imbalance(counts), time_s=t, impl=impl,
                        n_experts_total=dims.n_experts, assignments=sum(counts),
                        dirichlet_alpha=alpha, timing=how)
    if ctx.skipped:
        ctx.note(f"moe: time budget ran out, {ctx.skipped} points not measured")


def router_call(sets, top_k: int):
    """fn(i): gate logits in bf16, softmax in fp32, top-k weights and expert ids."""
    def fn(i):
        x, wg = sets[i]
        probs = torch.softmax(torch.mm(x, wg.t()).float(), dim=-1)
        return torch.topk(probs, top_k, dim=-1)
    return fn


def run_router(ctx: BenchContext) -> None:
    with ctx.table("router.csv") as out:
        for tokens, n_experts, top_k, hidden in router_points(ctx.smoke):
            if ctx.expired():
                ctx.skipped += 1
                continue
            set_bytes = 2 * (tokens + n_experts) * hidden
            n_sets = rotation_count(set_bytes, ctx.timer.l2_bytes, max_sets=32)
            sets = ctx.pool.sets([(tokens, hidden), (n_experts, hidden)], n_sets=n_sets)
            t, how = ctx.timer.measure(router_call(sets, top_k), n_sets)
            out.add(tokens=tokens, n_experts=n_experts, top_k=top_k, hidden=hidden, time_s=t,
                    timing=how)
    if ctx.skipped:
        ctx.note(f"router: time budget ran out, {ctx.skipped} points not measured")
