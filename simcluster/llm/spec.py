"""LlmSpec: the shape of a transformer LLM (dense, GQA, MoE, MLA), from the catalog or a HF config.json."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MoeSpec:
    """Mixture-of-experts feed-forward layers."""

    n_experts: int                      # routed experts per MoE layer
    top_k: int                          # routed experts each token activates
    expert_intermediate_size: int       # FFN width of one routed expert
    n_shared_experts: int = 0           # always-on experts (DeepSeek), each of expert_intermediate_size
    first_dense_layers: int = 0         # leading layers with a dense FFN instead of MoE (DeepSeek-V3: 3)
    layer_frequency: int = 1            # every n-th layer (after the dense ones) is MoE


@dataclass(frozen=True)
class MlaSpec:
    """Multi-head latent attention (DeepSeek-V2/V3): KV compressed into a latent of kv_lora_rank."""

    q_lora_rank: int                    # 0 means no query compression
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int


@dataclass(frozen=True)
class LlmSpec:
    """A decoder-only transformer.

    >>> spec = load_llm("llama-3.1-8b")
    >>> spec.n_layers, spec.n_kv_heads
    (32, 8)
    """

    name: str
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int              # dense FFN width (also for dense layers of an MoE model)
    vocab_size: int
    max_position: int = 8192
    ffn_activation: str = "swiglu"      # 'swiglu' (3 matrices) or 'gelu' (2 matrices)
    norm: str = "rmsnorm"               # 'rmsnorm' or 'layernorm'
    tie_embeddings: bool = False
    attention_bias: bool = False        # gpt2/gpt-neox carry biases; counted in parameters only
    moe: MoeSpec | None = None
    mla: MlaSpec | None = None
    sources: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_moe(self) -> bool:
        return self.moe is not None

    def is_moe_layer(self, layer: int) -> bool:
        """Whether 0-based `layer` has an MoE feed-forward."""
        if self.moe is None or layer < self.moe.first_dense_layers:
            return False
        return (layer - self.moe.first_dense_layers) % self.moe.layer_frequency == 0

    @property
    def n_moe_layers(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.n_layers))

    @property
    def n_dense_layers(self) -> int:
        return self.n_layers - self.n_moe_layers
