"""Which shapes each microbenchmark sweeps: pure functions of the model catalog and the mode.

Nothing here imports torch, so the shape lists can be tested on any machine.  Every grid comes in
two sizes: the full sweep (a GPU host, about ten minutes in all) and `smoke` (a CPU, seconds).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DenseDims:
    """The few dimensions of a decoder LLM that fix its projection GEMM shapes."""

    name: str
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int
    vocab: int = 128256


# Figures from each model's published config.json (Hugging Face model cards).
CATALOG_DIMS = (
    DenseDims("llama-3.1-8b", 4096, 32, 8, 128, 14336),
    DenseDims("llama-3.1-70b", 8192, 64, 8, 128, 28672),
    DenseDims("llama-3.2-1b", 2048, 32, 8, 64, 8192),
    DenseDims("llama-3.2-3b", 3072, 24, 8, 128, 8192),
    DenseDims("qwen3-32b", 5120, 64, 8, 128, 25600),
    # Mixtral's experts have Llama-3.1-8B's attention and MLP widths; listed so `source` says so.
    DenseDims("mixtral-8x7b", 4096, 32, 8, 128, 14336, vocab=32000),
)

TP_DEGREES = (1, 2, 4, 8)
GEMM_M_FULL = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
# Sweep order: spread over the range first, so a sweep cut short by its time budget still
# covers small, middle and large m.
GEMM_M_ORDER = (1, 16, 128, 1024, 4096, 16384, 8, 64, 512, 2048, 8192, 2, 32, 256, 32768, 4)
# Held-out points off the catalog grid: none of their n or k is a catalog width.
GEMM_OFF_GRID = ((3000, 5000, 7000), (1000, 3000, 5000), (7000, 2000, 9000), (333, 6000, 4500),
                 (5000, 7168, 3000), (48, 11000, 2500), (12000, 1536, 6144), (2500, 2500, 2500))


# Fit-side shapes whose k or n is not a multiple of 8 elements: a bf16 row stride that is not a
# multiple of 16 bytes keeps cuBLAS off its aligned kernels.  Distinct from every GEMM_OFF_GRID
# (n, k), so the held-out misaligned shapes there stay unseen.  k only, n only, both.
GEMM_MISALIGNED_NK = ((4096, 1500), (14336, 3500), (1024, 5500), (1500, 4096), (5500, 2048),
                      (3500, 3500))
GEMM_MISALIGNED_M = (1, 8, 32, 128, 512, 2048, 8192)


def projection_shapes(dims: DenseDims, tp: int) -> list[tuple[int, int, str]]:
    """(n, k, projection name) of one decoder layer's GEMMs at tensor-parallel degree `tp`.

    Column-parallel layers (qkv, gate_up, lm_head) split n; row-parallel ones (o_proj, down)
    split k, as in Megatron-LM's tensor parallelism (Shoeybi et al. 2019, section 3).
    KV heads are replicated once tp exceeds their count.
    """
    q_width = dims.n_heads * dims.head_dim // tp
    kv_width = max(1, dims.n_kv_heads // tp) * dims.head_dim
    return [
        (q_width + 2 * kv_width, dims.hidden, "qkv"),
        (dims.hidden, dims.n_heads * dims.head_dim // tp, "o_proj"),
        (2 * dims.ffn // tp, dims.hidden, "gate_up"),
        (dims.hidden, dims.ffn // tp, "down"),
        (-(-128256 // tp), dims.hidden, "lm_head"),
    ]


def gemm_nk_sources(catalog=CATALOG_DIMS, tps=TP_DEGREES) -> list[tuple[int, int, str]]:
    """Distinct (n, k) projection shapes with every model/proj/tp that produces them, '|'-joined."""
    sources: dict[tuple[int, int], list[str]] = {}
    for dims in catalog:
        for tp in tps:
            for n, k, proj in projection_shapes(dims, tp):
                sources.setdefault((n, k), []).append(f"{dims.name}/{proj}/tp{tp}")
    return [(n, k, "|".join(src)) for (n, k), src in sources.items()]


def gemm_points(smoke: bool) -> list[tuple[int, int, int, str]]:
    """(m, n, k, source) in sweep order: all catalog shapes for each m, then the held-out ones."""
    if smoke:
        nk = [(96, 64, "smoke/qkv/tp1"), (64, 128, "smoke/down/tp1")]
        points = [(m, n, k, s) for m in (1, 16) for n, k, s in nk]
        return points + [(24, 40, 56, "off_grid")]
    nk = gemm_nk_sources()
    points = [(m, n, k, s) for m in GEMM_M_ORDER for n, k, s in nk]
    return points + [(m, n, k, "off_grid") for m, n, k in GEMM_OFF_GRID]


def gemm_misaligned_points(smoke: bool) -> list[tuple[int, int, int, str]]:
    """(m, n, k, source) of the misaligned fit-side sweep (bf16 only: fp8 needs multiples of 16)."""
    if smoke:
        return [(m, n, k, "misaligned") for m in (1, 16) for n, k in ((64, 20), (20, 64))]
    return [(m, n, k, "misaligned") for n, k in GEMM_MISALIGNED_NK for m in GEMM_MISALIGNED_M]


# (n_heads, n_kv_heads, head_dim): Llama-3.1-8B/70B at TP1/TP8, Llama-3.2-1B, and between.
ATTENTION_HEADS = ((32, 8, 128), (64, 8, 128), (8, 1, 128), (16, 8, 64), (32, 8, 64), (16, 1, 128))


def prefill_points(smoke: bool) -> list[tuple[int, int, int, int, int, bool]]:
    """(batch, seq_len, n_heads, n_kv_heads, head_dim, causal), at most 64K tokens per batch."""
    if smoke:
        return [(1, 32, 4, 2, 16, True), (2, 16, 4, 1, 16, False)]
    out = []
    for b in (1, 2, 4, 8, 16, 32):
        for s in (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768):
            if b * s > 65536:
                continue
            for h, kv, d in ATTENTION_HEADS:
                out.append((b, s, h, kv, d, True))
    # Non-causal (encoder, chunked prefill without masking) on the first head layout only.
    for b, s in ((1, 1024), (1, 4096), (4, 2048), (1, 16384)):
        out.append((b, s, 32, 8, 128, False))
    return out


def decode_points(smoke: bool) -> list[tuple[int, int, int, int, int]]:
    """(batch, context_len, n_heads, n_kv_heads, head_dim); KV cache at most 16 GiB."""
    if smoke:
        return [(1, 32, 4, 2, 16), (4, 64, 4, 1, 16)]
    out = []
    for h, kv, d in ((32, 8, 128), (8, 1, 128), (64, 8, 128), (32, 8, 64)):
        for b in (1, 2, 4, 8, 16, 32, 64, 128, 256):
            for ctx in (128, 512, 1024, 2048, 4096, 8192, 16384, 32768):
                kv_bytes = 2 * b * kv * ctx * d * 2
                if kv_bytes <= 16 * 2**30:
                    out.append((b, ctx, h, kv, d))
    return out


@dataclass(frozen=True)
class MoeDims:
    """A MoE layer as one GPU sees it: `n_local` of `n_experts` experts, top-k routing."""

    name: str
    n_experts: int
    n_local: int
    top_k: int
    hidden: int
    expert_ffn: int


MOE_DIMS = (
    MoeDims("mixtral-8x7b", 8, 8, 2, 4096, 14336),
    MoeDims("qwen3-30b-a3b", 128, 128, 8, 2048, 768),
    # DeepSeek-V3 routed experts, one GPU's slice at expert parallelism 8 (32 of 256 local).
    MoeDims("deepseek-v3-ep8", 256, 32, 8, 7168, 2048),
)


def moe_points(smoke: bool) -> list[tuple[MoeDims, int, float]]:
    """(layer dims, tokens into the layer, Dirichlet concentration of the expert popularity)."""
    if smoke:
        return [(MoeDims("smoke", 8, 4, 2, 32, 48), t, a) for t in (4, 64) for a in (100.0, 0.3)]
    out = []
    for dims in MOE_DIMS:
        for tokens in (1, 8, 32, 128, 512, 2048, 8192, 16384):
            # A large concentration is near-uniform; 0.3 gives a few hot experts.
            for alpha in ((100.0,) if tokens <= 8 else (100.0, 1.0, 0.3)):
                out.append((dims, tokens, alpha))
    return out


def router_points(smoke: bool) -> list[tuple[int, int, int, int]]:
    """(tokens, n_experts, top_k, hidden) of the gate: GEMM, softmax, top-k."""
    if smoke:
        return [(t, 8, 2, 32) for t in (1, 16)]
    return [(t, d.n_experts, d.top_k, d.hidden) for d in MOE_DIMS
            for t in (1, 16, 128, 1024, 4096, 16384)]


ELEMENTWISE_OPS = ("rmsnorm", "layernorm", "silu_mul", "gelu", "rope", "residual_add",
                   "embedding", "sampling", "argmax")


def elementwise_points(smoke: bool) -> list[tuple[str, int, int]]:
    """(op, tokens, hidden); for sampling and argmax `hidden` is the vocabulary size."""
    if smoke:
        return [(op, t, 64) for op in ELEMENTWISE_OPS for t in (1, 8)]
    out = []
    tokens = (1, 4, 16, 64, 256, 1024, 4096, 16384, 32768)
    for op in ELEMENTWISE_OPS:
        if op in ("sampling", "argmax"):
            out += [(op, t, 128256) for t in tokens if t <= 1024]
        elif op == "rope":
            out += [(op, t, h) for h in (4096, 2048) for t in tokens]
        elif op in ("silu_mul", "gelu"):     # `hidden` is the MLP intermediate width here
            out += [(op, t, h) for h in (14336, 8192, 3584) for t in tokens]
        else:
            out += [(op, t, h) for h in (4096, 8192, 2048) for t in tokens]
    return out


def launch_points(smoke: bool) -> list[int]:
    """Chain lengths of tiny kernels."""
    return [1, 10, 100] if smoke else [1, 10, 100, 1000]


def memcpy_sizes(smoke: bool) -> list[int]:
    """Copy sizes in bytes: powers of 4 from 4 KiB to 1 GiB."""
    top = 2**20 if smoke else 2**30
    return [4096 * 4**i for i in range(12) if 4096 * 4**i <= top]


def collective_sizes(smoke: bool) -> list[int]:
    """Collective payload sizes in bytes: powers of 4 from 4 KiB to 1 GiB."""
    top = 2**18 if smoke else 2**30
    return [4096 * 4**i for i in range(12) if 4096 * 4**i <= top]
