"""Parameter counts of an LlmSpec: per attention block, FFN, expert, layer, embedding, whole model.

Every function is a pure formula over the spec's shapes; weights only (no optimizer state, no buffers).
Published totals these reproduce within 2% are pinned in tests/llm/test_params.py.

>>> from simcluster.llm.spec import load_llm
>>> round(total_params(load_llm("llama-3.1-8b")) / 1e9, 2)
8.03
"""

from __future__ import annotations

from simcluster.llm.spec import LlmSpec


def _check_layer(spec: LlmSpec, layer: int) -> None:
    if not 0 <= layer < spec.n_layers:
        raise IndexError(f"layer {layer} out of range for {spec.name} with {spec.n_layers} layers")


def norm_params(spec: LlmSpec) -> int:
    """Norm weights of one layer: the pre-attention and pre-FFN norms (plus Qwen3's per-head QK norms).

    RMSNorm has a gain vector only (Zhang & Sennrich 2019, eq. 4); LayerNorm a gain and a bias
    (Ba et al. 2016). Qwen3 normalises every query and key head with an RMSNorm of width head_dim.
    """
    per_norm = spec.hidden_size * (2 if spec.norm == "layernorm" else 1)
    qk = 2 * spec.head_dim if spec.qk_norm else 0
    return 2 * per_norm + qk


def final_norm_params(spec: LlmSpec) -> int:
    """The norm after the last layer, before the LM head."""
    return spec.hidden_size * (2 if spec.norm == "layernorm" else 1)


def attention_params(spec: LlmSpec) -> int:
    """Weights of one attention block (projections; norms are in norm_params).

    Multi-head / grouped-query attention (Vaswani et al. 2017 §3.2.2; Ainslie et al. 2023, GQA):
      W_Q: h x (n_h d), W_K and W_V: h x (n_kv d) each, W_O: (n_h d) x h,
    plus biases n_h d + 2 n_kv d + h when attention_bias (GPT-2/NeoX fused-QKV and output biases).
    Multi-head latent attention (DeepSeek-V2 §2.1.2-2.1.3, eqs. 9-14; HF DeepseekV3Attention):
      q:  h x q_lora + q_lora (latent RMSNorm) + q_lora x n_h (d_nope + d_rope)
          (h x n_h (d_nope + d_rope) when q_lora = 0, as in DeepSeek-V2-Lite)
      kv: h x (kv_lora + d_rope) + kv_lora (latent RMSNorm) + kv_lora x n_h (d_nope + d_v)
      o:  n_h d_v x h
    """
    h, n_h = spec.hidden_size, spec.n_heads
    if spec.mla is not None:
        a = spec.mla
        qk = a.qk_nope_head_dim + a.qk_rope_head_dim
        if a.q_lora_rank:
            q = h * a.q_lora_rank + a.q_lora_rank + a.q_lora_rank * n_h * qk
        else:
            q = h * n_h * qk
        kv = h * (a.kv_lora_rank + a.qk_rope_head_dim) + a.kv_lora_rank \
            + a.kv_lora_rank * n_h * (a.qk_nope_head_dim + a.v_head_dim)
        o = n_h * a.v_head_dim * h
        return q + kv + o
    d, n_kv = spec.head_dim, spec.n_kv_heads
    weights = h * n_h * d + 2 * h * n_kv * d + n_h * d * h
    biases = (n_h * d + 2 * n_kv * d + h) if spec.attention_bias else 0
    return weights + biases


def _ffn_matrices(spec: LlmSpec) -> int:
    # SwiGLU has gate, up and down projections (Shazeer 2020, "GLU Variants Improve Transformer", eq. 6);
    # the GELU FFN of GPT-2/GPT-3 has up and down only (Vaswani et al. 2017 §3.3).
    return 3 if spec.ffn_activation == "swiglu" else 2


def _mlp_params(spec: LlmSpec, width: int) -> int:
    """One FFN of `width`: matrices h x width each, plus biases (width + h) when mlp_bias."""
    n = _ffn_matrices(spec)
    biases = ((n - 1) * width + spec.hidden_size) if spec.mlp_bias else 0
    return n * spec.hidden_size * width + biases


def expert_params(spec: LlmSpec) -> int:
    """Weights of one routed expert: an FFN of expert_intermediate_size (Fedus et al. 2021; Jiang et al. 2024)."""
    if spec.moe is None:
        raise ValueError(f"{spec.name} is not a mixture-of-experts model")
    return _mlp_params(spec, spec.moe.expert_intermediate_size)


def router_params(spec: LlmSpec) -> int:
    """The gate of one MoE layer: h x n_experts (Shazeer et al. 2017, eq. 3 without noise)."""
    if spec.moe is None:
        raise ValueError(f"{spec.name} is not a mixture-of-experts model")
    return spec.hidden_size * spec.moe.n_experts


def ffn_params(spec: LlmSpec, layer: int) -> int:
    """All FFN weights of 0-based `layer`: the dense FFN, or every routed expert + shared experts + router.

    Shared experts are always-on experts of the routed experts' width (DeepSeekMoE, Dai et al. 2024 §3.2).
    """
    _check_layer(spec, layer)
    if not spec.is_moe_layer(layer):
        return _mlp_params(spec, spec.intermediate_size)
    moe = spec.moe
    assert moe is not None
    return (moe.n_experts + moe.n_shared_experts) * expert_params(spec) + router_params(spec)


def active_ffn_params(spec: LlmSpec, layer: int) -> int:
    """FFN weights one token touches in `layer`: top_k routed + shared experts + router, or the dense FFN."""
    _check_layer(spec, layer)
    if not spec.is_moe_layer(layer):
        return _mlp_params(spec, spec.intermediate_size)
    moe = spec.moe
    assert moe is not None
    return (moe.top_k + moe.n_shared_experts) * expert_params(spec) + router_params(spec)


def layer_params(spec: LlmSpec, layer: int) -> int:
    """All weights of 0-based `layer`: attention + FFN (all experts) + norms."""
    return attention_params(spec) + ffn_params(spec, layer) + norm_params(spec)


def embedding_params(spec: LlmSpec) -> int:
    """Token embedding (vocab x h), the LM head unless tied, and a learned position table (GPT-2/3)."""
    tokens = spec.vocab_size * spec.hidden_size
    head = 0 if spec.tie_embeddings else tokens
    positions = spec.max_position * spec.hidden_size if spec.position_embedding == "learned" else 0
    return tokens + head + positions


def total_params(spec: LlmSpec) -> int:
    """Every weight of the model: embeddings, all layers (all experts), final norm."""
    layers = sum(layer_params(spec, i) for i in range(spec.n_layers))
    return embedding_params(spec) + layers + final_norm_params(spec)


def active_params(spec: LlmSpec) -> int:
    """Weights one token touches: as total_params but with only top_k routed (+ shared) experts per MoE layer.

    Counts the input embedding, as the published Mixtral (12.9B) and Qwen3 (3.3B) figures do; DeepSeek's
    figures leave it out (V3: 36.6B), so subtract vocab_size x hidden_size to compare with those.
    """
    layers = sum(attention_params(spec) + active_ffn_params(spec, i) + norm_params(spec)
                 for i in range(spec.n_layers))
    return embedding_params(spec) + layers + final_norm_params(spec)
