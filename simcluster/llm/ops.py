"""Per-iteration operator lists: what one forward (serving) iteration of one pipeline stage computes.

Each Op carries FLOPs, bytes moved through device memory and, for communication, the collective
and its message size, so a cost model can time it without knowing the LLM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from simcluster.llm.spec import LlmSpec
from simcluster.units import dtype_bytes

KINDS = (
    "gemm", "attention_prefill", "attention_decode", "moe", "norm", "activation", "rope",
    "embedding", "sampling", "elementwise", "collective",
)


@dataclass(frozen=True)
class Op:
    """One operation, repeated `repeat` times per iteration (e.g. once per layer of the stage).

    flops and bytes are per occurrence. For kind 'collective', `collective` names it
    ('all_reduce', 'all_gather', 'reduce_scatter', 'all_to_all', 'send_recv') and
    `message_bytes` is the NCCL-convention size (the buffer each rank holds).
    """

    name: str
    kind: str
    flops: float = 0.0
    bytes: float = 0.0
    repeat: int = 1
    dtype: str = "bf16"
    shape: dict = field(default_factory=dict)
    collective: str | None = None
    group_size: int = 1
    message_bytes: float = 0.0
    scope: str = "intra"                 # 'intra' (inside a node) or 'inter' (crosses nodes)
    kernels: int = 1                     # device kernels one occurrence launches (host launch gaps)


@dataclass(frozen=True)
class Implementation:
    """How an engine realises one layer as kernels.

    The default is a serving engine's form (vLLM, SGLang, TensorRT-LLM): one fused qkv GEMM and
    one gate_up GEMM, RoPE as one kernel, the K/V-cache write folded into the attention kernels
    (not listed), logits normed for the emitting positions only.  PLAIN_TORCH below describes
    calibrate/llama.py, the benchmark model of profiles/measured/<gpu>/model_forward.csv.

    fused_projections: False lists q, k, v and gate, up as separate GEMMs.
    kv_cache_write: list the K and V cache writes as two copy kernels per layer.
    rope: 'fused' (one kernel) or 'rotate_half' (torch ops: neg, cat, two muls and an add on each
      of q and k, the form calibrate/elementwise.py times as 'rope').
    final_norm_all_tokens: the last norm runs on every new token, before the last position is
      taken (as `Llama.prefill` does), not only on the positions emitting logits.
    gated_activation: 'fused' (one silu_mul op, as the elementwise table times it on the halves
      of one gate_up output) or 'separate' (silu(gate), then * up: two kernels on contiguous
      tensors, as separate gate and up projections leave them).
    attention: 'flash' (the engine's fused attention kernel, priced from the flash-pinned
      attention tables) or 'sdpa' (torch's scaled_dot_product_attention with its default backend
      choice, priced from the attention_*_sdpa tables where a GPU has them).
    """

    fused_projections: bool = True
    kv_cache_write: bool = False
    rope: str = "fused"
    final_norm_all_tokens: bool = False
    gated_activation: str = "fused"
    attention: str = "flash"


# calibrate/llama.py's decoder as torch runs it eagerly or captured in a graph.
PLAIN_TORCH = Implementation(fused_projections=False, rope="rotate_half", final_norm_all_tokens=True,
                             gated_activation="separate", attention="sdpa")
# Kernels of the rotate-half RoPE on q and k: neg, cat, mul, mul, add on each tensor.
ROTATE_HALF_KERNELS = 10
# The elementwise table's 'rope' rows rotate the query width plus 8 KV heads of head_dim 128
# (calibrate/elementwise.py): its `hidden` key is the query width alone.
ROPE_TABLE_KV_WIDTH = 8 * 128


@dataclass(frozen=True)
class Batch:
    """The sequences one serving iteration processes.

    prefill: (new_tokens, cached_context_tokens) per sequence being prefilled (or chunk-prefilled);
    decode: context length (tokens already in the KV cache) per sequence generating one token.
    """

    prefill: tuple[tuple[int, int], ...] = ()
    decode: tuple[int, ...] = ()

    @property
    def new_tokens(self) -> int:
        return sum(s for s, _ in self.prefill) + len(self.decode)

    @property
    def n_sequences(self) -> int:
        return len(self.prefill) + len(self.decode)


def gemm(name: str, m: int, n: int, k: int, dtype: str, repeat: int = 1) -> Op:
    """C[m,n] = A[m,k] @ B[k,n]: 2mnk FLOPs; bytes = A + B + C once each."""
    b = dtype_bytes(dtype)
    return Op(name, "gemm", flops=2.0 * m * n * k, bytes=b * (m * k + k * n + m * n),
              repeat=repeat, dtype=dtype, shape={"m": m, "n": n, "k": k})


def _heads_per_rank(n: int, tp: int) -> int:
    # KV heads are replicated when there are fewer than TP ranks (vLLM/Megatron convention).
    return max(1, math.ceil(n / tp))


def kv_bytes_per_token(llm: LlmSpec, tp: int = 1, pp: int = 1, dtype: str = "bf16") -> float:
    """KV-cache bytes one token occupies on one GPU of a TP×PP replica.

    Standard attention: 2 (K and V) × layers × kv_heads × head_dim × bytes.
    MLA (DeepSeek-V2 §2.1): the cached latent is kv_lora_rank + qk_rope_head_dim per layer,
    replicated on every TP rank.
    """
    layers = math.ceil(llm.n_layers / pp)
    b = dtype_bytes(dtype)
    if llm.mla is not None:
        return layers * (llm.mla.kv_lora_rank + llm.mla.qk_rope_head_dim) * b
    return 2.0 * layers * _heads_per_rank(llm.n_kv_heads, tp) * llm.head_dim * b


def _attention_projections(llm: LlmSpec, m: int, tp: int, dtype: str, layers: int,
                           impl: Implementation = Implementation()) -> list[Op]:
    h = llm.n_heads // tp if llm.n_heads >= tp else 1
    if llm.mla is not None:
        a = llm.mla
        ops = []
        qk_dim = a.qk_nope_head_dim + a.qk_rope_head_dim
        if a.q_lora_rank:
            ops.append(gemm("attn.q_a_proj", m, a.q_lora_rank, llm.hidden_size, dtype, layers))
            ops.append(gemm("attn.q_b_proj", m, h * qk_dim, a.q_lora_rank, dtype, layers))
        else:
            ops.append(gemm("attn.q_proj", m, h * qk_dim, llm.hidden_size, dtype, layers))
        ops.append(gemm("attn.kv_a_proj", m, a.kv_lora_rank + a.qk_rope_head_dim, llm.hidden_size, dtype, layers))
        ops.append(gemm("attn.kv_b_proj", m, h * (a.qk_nope_head_dim + a.v_head_dim), a.kv_lora_rank, dtype, layers))
        ops.append(gemm("attn.o_proj", m, llm.hidden_size, h * a.v_head_dim, dtype, layers))
        return ops
    kv = _heads_per_rank(llm.n_kv_heads, tp)
    if not impl.fused_projections:
        return [
            gemm("attn.q_proj", m, h * llm.head_dim, llm.hidden_size, dtype, layers),
            gemm("attn.k_proj", m, kv * llm.head_dim, llm.hidden_size, dtype, layers),
            gemm("attn.v_proj", m, kv * llm.head_dim, llm.hidden_size, dtype, layers),
            gemm("attn.o_proj", m, llm.hidden_size, h * llm.head_dim, dtype, layers),
        ]
    return [
        gemm("attn.qkv_proj", m, (h + 2 * kv) * llm.head_dim, llm.hidden_size, dtype, layers),
        gemm("attn.o_proj", m, llm.hidden_size, h * llm.head_dim, dtype, layers),
    ]


def _ffn(llm: LlmSpec, m: int, width: int, tp: int, dtype: str, layers: int, prefix: str,
         impl: Implementation = Implementation()) -> list[Op]:
    w = max(1, width // tp)
    b = dtype_bytes(dtype)
    if llm.ffn_activation == "swiglu":
        up = ([gemm(f"{prefix}.gate_up_proj", m, 2 * w, llm.hidden_size, dtype, layers)]
              if impl.fused_projections else
              [gemm(f"{prefix}.gate_proj", m, w, llm.hidden_size, dtype, layers),
               gemm(f"{prefix}.up_proj", m, w, llm.hidden_size, dtype, layers)])
        if impl.gated_activation == "separate":
            # Priced by the measured passes of the same memory pattern: a unary pass (the table's
            # gelu: one read, one write) and a binary one (the table's residual_add).
            act = [Op(f"{prefix}.silu", "activation", flops=4.0 * m * w, bytes=2.0 * m * w * b, repeat=layers,
                      dtype=dtype, shape={"tokens": m, "hidden": w, "op": "gelu"}),
                   Op(f"{prefix}.gate_mul", "elementwise", flops=1.0 * m * w, bytes=3.0 * m * w * b, repeat=layers,
                      dtype=dtype, shape={"tokens": m, "hidden": w, "op": "mul"})]
        else:
            act = [Op(f"{prefix}.act", "activation", flops=4.0 * m * w, bytes=3.0 * m * w * b, repeat=layers,
                      dtype=dtype, shape={"tokens": m, "hidden": w, "op": "silu_mul"})]
        return up + act + [gemm(f"{prefix}.down_proj", m, llm.hidden_size, w, dtype, layers)]
    return [
        gemm(f"{prefix}.up_proj", m, w, llm.hidden_size, dtype, layers),
        Op(f"{prefix}.act", "activation", flops=8.0 * m * w, bytes=2.0 * m * w * b, repeat=layers,
           dtype=dtype, shape={"tokens": m, "hidden": w, "op": "gelu"}),
        gemm(f"{prefix}.down_proj", m, llm.hidden_size, w, dtype, layers),
    ]


def expected_experts_touched(n_experts: int, top_k: int, tokens: int) -> float:
    """Expected distinct experts hit when `tokens` each pick top_k of n_experts uniformly.

    1 - (1 - k/E)^T per expert (balls into bins); bounds the expert weight bytes a MoE layer reads.
    """
    if tokens <= 0:
        return 0.0
    return n_experts * (1.0 - (1.0 - top_k / n_experts) ** tokens)


def _moe(llm: LlmSpec, m: int, tp: int, ep: int, dtype: str, layers: int, imbalance: float) -> list[Op]:
    moe = llm.moe
    assert moe is not None
    b = dtype_bytes(dtype)
    h = llm.hidden_size
    f = moe.expert_intermediate_size
    matrices = 3 if llm.ffn_activation == "swiglu" else 2
    ops = [gemm("moe.router", m, moe.n_experts, h, dtype, layers)]
    # Experts are either spread over EP ranks (whole experts per GPU) or each split over TP ranks.
    shard = ep if ep > 1 else tp
    local_experts = moe.n_experts / ep if ep > 1 else moe.n_experts
    routed = m * moe.top_k  # token-expert pairs over the whole group
    local_pairs = routed / ep * imbalance if ep > 1 else routed
    width = f if ep > 1 else f / tp
    touched = expected_experts_touched(int(local_experts), min(moe.top_k, int(local_experts)), int(local_pairs) if ep > 1 else m)
    flops = 2.0 * matrices * h * width * local_pairs
    bytes_ = touched * matrices * h * width * b + 2.0 * local_pairs * h * b + local_pairs * width * b * 2
    ops.append(Op("moe.experts", "moe", flops=flops, bytes=bytes_, repeat=layers, dtype=dtype,
                  shape={"tokens": m, "n_experts": moe.n_experts, "local_experts": local_experts,
                         "top_k": moe.top_k, "hidden": h, "expert_ffn": width, "imbalance": imbalance,
                         "shard": shard}))
    if moe.n_shared_experts:
        ops += _ffn(llm, m, moe.n_shared_experts * f, tp, dtype, layers, "moe.shared")
    if ep > 1:
        # Dispatch and combine: each rank sends its tokens' hidden states to the experts' ranks.
        msg = m * moe.top_k * h * b / ep
        for name in ("moe.dispatch", "moe.combine"):
            ops.append(Op(name, "collective", repeat=layers, dtype=dtype, collective="all_to_all",
                          group_size=ep, message_bytes=msg, bytes=msg, shape={"tokens": m}))
    return ops


def _attention_dims(llm: LlmSpec, tp: int) -> tuple[int, int, int, int, int, int]:
    """(query heads per rank, kv heads per rank, prefill qk dim, prefill v dim, decode qk dim, decode v dim)."""
    h = llm.n_heads // tp if llm.n_heads >= tp else 1
    if llm.mla is not None:
        a = llm.mla
        # Decode uses the absorbed form (DeepSeek-V2 appendix): scores and values over the latent.
        return (h, h, a.qk_nope_head_dim + a.qk_rope_head_dim, a.v_head_dim,
                a.kv_lora_rank + a.qk_rope_head_dim, a.kv_lora_rank)
    d = llm.head_dim
    return h, _heads_per_rank(llm.n_kv_heads, tp), d, d, d, d


def _dispatch(shape: dict, attention: str) -> dict:
    """The op's shape, marked when it runs through torch's default SDPA dispatch (the flash form,
    the default, stays unmarked)."""
    return shape if attention == "flash" else {**shape, "dispatch": attention}


def prefill_attention_op(llm: LlmSpec, n_seqs: int, new_tokens: int, context_tokens: int, pairs: float,
                         tp: int = 1, layers: int = 1, dtype: str = "bf16", kv_dtype: str = "bf16",
                         attention: str = "flash") -> Op:
    """Causal attention of `new_tokens` over `context_tokens` keys in n_seqs sequences.

    pairs = Σ s·(c + (s+1)/2): query-key pairs when s new tokens follow c cached ones (causal mask).
    FLOPs = 2·heads·(d_qk + d_v)·pairs; bytes = Q and O once + the whole K/V context once.
    attention: Implementation.attention.
    """
    h, kv, dqk, dv, _, _ = _attention_dims(llm, tp)
    kv_token_bytes = kv_bytes_per_token(llm, tp, 1, kv_dtype) / llm.n_layers
    b = dtype_bytes(dtype)
    return Op("attn.prefill", "attention_prefill", flops=2.0 * h * (dqk + dv) * pairs,
              bytes=new_tokens * h * (dqk + dv) * b + context_tokens * kv_token_bytes, repeat=layers, dtype=dtype,
              shape=_dispatch({"batch": n_seqs, "seq_len": new_tokens / n_seqs,
                               "context_len": context_tokens / n_seqs, "n_heads": h, "n_kv_heads": kv,
                               "head_dim": dqk}, attention))


def decode_attention_op(llm: LlmSpec, n_seqs: int, context_tokens: int, tp: int = 1, layers: int = 1,
                        dtype: str = "bf16", kv_dtype: str = "bf16", attention: str = "flash") -> Op:
    """One new query per sequence against its KV cache (context_tokens summed over the batch,
    the new token included). Memory-bound: reads every cached K/V byte once."""
    h, kv, _, _, dqk, dv = _attention_dims(llm, tp)
    kv_token_bytes = kv_bytes_per_token(llm, tp, 1, kv_dtype) / llm.n_layers
    b = dtype_bytes(dtype)
    return Op("attn.decode", "attention_decode", flops=2.0 * h * (dqk + dv) * context_tokens,
              bytes=context_tokens * kv_token_bytes + n_seqs * h * (dqk + dv) * b, repeat=layers, dtype=dtype,
              shape=_dispatch({"batch": n_seqs, "context_len": context_tokens / n_seqs, "n_heads": h,
                               "n_kv_heads": kv, "head_dim": dqk}, attention))


def attention_ops(llm: LlmSpec, batch: Batch, tp: int = 1, layers: int = 1, dtype: str = "bf16",
                  kv_dtype: str = "bf16", attention: str = "flash") -> list[Op]:
    ops = []
    if batch.prefill:
        pairs = sum(s * (c + (s + 1) / 2.0) for s, c in batch.prefill)
        new = sum(s for s, _ in batch.prefill)
        ctx = sum(s + c for s, c in batch.prefill)
        ops.append(prefill_attention_op(llm, len(batch.prefill), new, ctx, pairs, tp, layers, dtype, kv_dtype,
                                        attention))
    if batch.decode:
        ctx = sum(batch.decode) + len(batch.decode)
        ops.append(decode_attention_op(llm, len(batch.decode), ctx, tp, layers, dtype, kv_dtype, attention))
    return ops


def stage_layers(llm: LlmSpec, pp: int, stage: int) -> range:
    """0-based layer indices of pipeline `stage` when layers are split evenly over pp stages."""
    per_stage = math.ceil(llm.n_layers / pp)
    return range(stage * per_stage, min(llm.n_layers, (stage + 1) * per_stage))


def rope_op(llm: LlmSpec, m: int, tp: int, dtype: str, layers: int, impl: Implementation) -> Op:
    """Rotary embedding of the new tokens' queries and keys (RoFormer, Su et al. 2021)."""
    b = dtype_bytes(dtype)
    hq = llm.n_heads // tp if llm.n_heads >= tp else 1
    rope_dim = llm.mla.qk_rope_head_dim if llm.mla else llm.head_dim
    if impl.rope == "rotate_half" and llm.mla is None:
        width = (hq + _heads_per_rank(llm.n_kv_heads, tp)) * rope_dim
        # Keyed like the table: the query-equivalent width whose rows move the same bytes.
        return Op("attn.rope", "rope", flops=6.0 * m * width, bytes=4.0 * m * width * b, repeat=layers,
                  dtype=dtype, shape={"tokens": m, "hidden": max(rope_dim, width - ROPE_TABLE_KV_WIDTH)},
                  kernels=ROTATE_HALF_KERNELS)
    return Op("attn.rope", "rope", flops=6.0 * m * (hq + 1) * rope_dim, bytes=4.0 * m * (hq + 1) * rope_dim * b,
              repeat=layers, dtype=dtype, shape={"tokens": m, "hidden": (hq + 1) * rope_dim})


def kv_cache_write_op(llm: LlmSpec, m: int, tp: int, layers: int, kv_dtype: str) -> Op:
    """The new tokens' K and V copied into the cache: one copy kernel per tensor per layer (one
    for MLA's single latent), reading and writing m × kv bytes per token of the layer."""
    copies = 1 if llm.mla is not None else 2
    layer_bytes = kv_bytes_per_token(llm, tp, 1, kv_dtype) / llm.n_layers
    width = layer_bytes / copies / dtype_bytes(kv_dtype)
    # Priced by the measured residual_add pass (elementwise table) of equal bytes: a copy makes
    # two passes over its width, residual_add three.
    return Op("attn.kv_cache_write", "elementwise", bytes=2.0 * m * layer_bytes / copies, repeat=copies * layers,
              dtype=kv_dtype, shape={"tokens": m, "hidden": max(1, round(width * 2 / 3)), "op": "copy"})


def linear_ops(llm: LlmSpec, tokens: int, sequences: int, tp: int = 1, pp: int = 1, ep: int = 1,
               dtype: str = "bf16", stage: int = 0, moe_imbalance: float = 1.0,
               impl: Implementation = Implementation(), kv_dtype: str = "bf16") -> list[Op]:
    """Every op of a forward iteration except the attention core: it depends only on the number of
    new tokens and of sequences emitting logits, so simulators can cache it by (tokens, sequences)."""
    m = tokens
    layers_range = stage_layers(llm, pp, stage)
    n_moe = sum(llm.is_moe_layer(i) for i in layers_range)
    layers = len(layers_range)
    n_dense = layers - n_moe
    b = dtype_bytes(dtype)
    h = llm.hidden_size
    ops: list[Op] = []
    if stage == 0:
        ops.append(Op("embedding", "embedding", bytes=2.0 * m * h * b, dtype=dtype, shape={"tokens": m, "hidden": h}))
    ops.append(Op("norm", "norm", flops=5.0 * m * h, bytes=2.0 * m * h * b, repeat=2 * layers, dtype=dtype,
                  shape={"tokens": m, "hidden": h, "op": llm.norm}))
    ops += _attention_projections(llm, m, tp, dtype, layers, impl)
    ops.append(rope_op(llm, m, tp, dtype, layers, impl))
    if impl.kv_cache_write:
        ops.append(kv_cache_write_op(llm, m, tp, layers, kv_dtype))
    if n_dense:
        ops += _ffn(llm, m, llm.intermediate_size, tp, dtype, n_dense, "ffn", impl)
    if n_moe:
        ops += _moe(llm, m, tp, ep, dtype, n_moe, moe_imbalance)
    ops.append(Op("residual_add", "elementwise", flops=m * h, bytes=3.0 * m * h * b, repeat=2 * layers, dtype=dtype,
                  shape={"tokens": m, "hidden": h}))
    if tp > 1:
        # Megatron TP: one all-reduce after attention and one after the FFN in every layer.
        msg = m * h * b
        ops.append(Op("tp.all_reduce", "collective", bytes=msg, repeat=2 * layers, dtype=dtype,
                      collective="all_reduce", group_size=tp, message_bytes=msg, shape={"tokens": m}))
    if pp > 1 and stage < pp - 1:
        msg = m * h * b
        ops.append(Op("pp.send", "collective", bytes=msg, dtype=dtype, collective="send_recv", group_size=2,
                      message_bytes=msg, shape={"tokens": m}))
    if stage == pp - 1:
        # Logits only for the last position of each sequence that emits a token this iteration.
        seqs = sequences
        normed = m if impl.final_norm_all_tokens else seqs
        ops.append(Op("final_norm", "norm", flops=5.0 * normed * h, bytes=2.0 * normed * h * b, dtype=dtype,
                      shape={"tokens": normed, "hidden": h, "op": llm.norm}))
        ops.append(gemm("lm_head", seqs, max(1, llm.vocab_size // tp), h, dtype))
        ops.append(Op("sampling", "sampling", flops=5.0 * seqs * llm.vocab_size, bytes=4.0 * seqs * llm.vocab_size,
                      dtype="fp32", shape={"tokens": seqs, "hidden": llm.vocab_size}))
    return ops


def forward_ops(
    llm: LlmSpec,
    batch: Batch,
    tp: int = 1,
    pp: int = 1,
    ep: int = 1,
    dtype: str = "bf16",
    kv_dtype: str = "bf16",
    stage: int = 0,
    moe_imbalance: float = 1.0,
    impl: Implementation = Implementation(),
) -> list[Op]:
    """Operators of one forward iteration on one GPU of pipeline `stage` (layers split evenly over pp);
    `impl` says which kernels realise a layer (default: a serving engine's fused form).

    >>> from simcluster.llm.spec import load_llm
    >>> ops = forward_ops(load_llm("llama-3.1-8b"), Batch(prefill=((2048, 0),)))
    >>> 28e12 < total_flops(ops) < 31e12    # 2 × 7e9 matmul params × 2048 tokens + attention
    True
    """
    if batch.new_tokens == 0:
        return []
    ops = linear_ops(llm, batch.new_tokens, batch.n_sequences, tp, pp, ep, dtype, stage, moe_imbalance, impl,
                     kv_dtype)
    layers = len(stage_layers(llm, pp, stage))
    attn = attention_ops(llm, batch, tp, layers, dtype, kv_dtype, impl.attention)
    # Keep execution order readable: attention core right after the rope op.
    at = next(i for i, o in enumerate(ops) if o.kind == "rope") + 1
    return ops[:at] + attn + ops[at:]


def total_flops(ops: list[Op]) -> float:
    return sum(o.flops * o.repeat for o in ops)


def total_bytes(ops: list[Op]) -> float:
    return sum(o.bytes * o.repeat for o in ops)
