"""Read a Hugging Face `config.json` into an LlmSpec.

Supported `model_type`s: llama, mistral, qwen2, qwen3, qwen3_moe, mixtral, deepseek_v2, deepseek_v3,
gpt2 and gpt_neox. Each reader names the keys it needs; a missing key or a value simcluster cannot
model raises LlmConfigError with one line naming the file and the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from simcluster.llm.spec import LlmSpec, MlaSpec, MoeSpec


class LlmConfigError(ValueError):
    """A Hugging Face config.json that simcluster cannot read or model."""


class _Config:
    """A parsed config.json with typed accessors whose errors name the file and the key."""

    def __init__(self, data: dict[str, Any], path: Path):
        self.data = data
        self.path = path

    def error(self, key: str, expected: str) -> LlmConfigError:
        got = self.data.get(key, "<missing>")
        return LlmConfigError(f"{self.path}: key {key!r}: expected {expected}, got {got!r}")

    def integer(self, key: str, default: int | None = None, minimum: int = 1) -> int:
        value = self.data.get(key)
        if value is None:
            if default is not None:
                return default
            model_type = self.data.get("model_type")
            raise LlmConfigError(f"{self.path}: missing key {key!r} (needed for model_type {model_type!r})")
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.error(key, f"an integer >= {minimum}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, "true or false")
        return value

    def activation(self, key: str, accepted: dict[str, str]) -> str:
        """Map the config's activation name to simcluster's FFN kind ('swiglu' or 'gelu')."""
        value = self.data.get(key)
        if value is None:
            model_type = self.data.get("model_type")
            raise LlmConfigError(f"{self.path}: missing key {key!r} (needed for model_type {model_type!r})")
        if value not in accepted:
            raise self.error(key, f"one of {sorted(accepted)}")
        return accepted[value]


def _name(path: Path) -> str:
    # A checkpoint folder names the model ('.../Llama-3.1-8B/config.json'); a loose file names itself.
    return path.parent.name if path.name == "config.json" else path.stem


def _read(path: Path) -> _Config:
    try:
        text = path.read_text()
    except OSError as e:
        raise LlmConfigError(f"{path}: cannot read the file ({e.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LlmConfigError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(data, dict):
        raise LlmConfigError(f"{path}: expected a JSON object at the top level")
    return _Config(data, path)


def _attention(c: _Config) -> dict[str, int]:
    hidden = c.integer("hidden_size")
    heads = c.integer("num_attention_heads")
    kv_heads = c.integer("num_key_value_heads", default=heads)
    if heads % kv_heads:
        raise c.error("num_key_value_heads", f"a divisor of num_attention_heads ({heads})")
    # head_dim is explicit in newer configs (Qwen3, Llama 3.2) and may differ from hidden/heads.
    return dict(n_layers=c.integer("num_hidden_layers"), hidden_size=hidden, n_heads=heads, n_kv_heads=kv_heads,
                head_dim=c.integer("head_dim", default=hidden // heads), vocab_size=c.integer("vocab_size"),
                max_position=c.integer("max_position_embeddings"))


_GATED_SILU = {"silu": "swiglu", "swish": "swiglu"}
_GELU = {"gelu": "gelu", "gelu_new": "gelu", "gelu_fast": "gelu", "gelu_pytorch_tanh": "gelu"}


def _llama_like(c: _Config, attention_bias_default: bool = False, qk_norm: bool = False) -> dict[str, Any]:
    return dict(**_attention(c), intermediate_size=c.integer("intermediate_size"),
                ffn_activation=c.activation("hidden_act", _GATED_SILU), norm="rmsnorm",
                tie_embeddings=c.flag("tie_word_embeddings", False),
                attention_bias=c.flag("attention_bias", attention_bias_default),
                mlp_bias=c.flag("mlp_bias", False), qk_norm=qk_norm)


def _llama(c: _Config) -> dict[str, Any]:
    return _llama_like(c)


def _qwen2(c: _Config) -> dict[str, Any]:
    # Qwen2 always carries q/k/v biases (no config key); simcluster counts them with the output bias.
    return _llama_like(c, attention_bias_default=True)


def _qwen3(c: _Config) -> dict[str, Any]:
    return _llama_like(c, qk_norm=True)


def _qwen3_moe(c: _Config) -> dict[str, Any]:
    fields = _llama_like(c, qk_norm=True)
    step = c.integer("decoder_sparse_step", default=1)
    mlp_only = c.data.get("mlp_only_layers") or []
    if not isinstance(mlp_only, list) or not all(isinstance(i, int) for i in mlp_only):
        raise c.error("mlp_only_layers", "a list of layer indices")
    if mlp_only and (step != 1 or sorted(mlp_only) != list(range(len(mlp_only)))):
        raise c.error("mlp_only_layers", "empty, or the leading layers 0..k-1 with decoder_sparse_step 1")
    # HF makes layer i MoE when (i + 1) % step == 0: the same as step-1 leading dense layers, then every step-th.
    first_dense = len(mlp_only) if mlp_only else step - 1
    n_experts = c.integer("num_experts")
    fields["moe"] = MoeSpec(n_experts=n_experts, top_k=_top_k(c, n_experts),
                            expert_intermediate_size=c.integer("moe_intermediate_size"),
                            first_dense_layers=first_dense, layer_frequency=step)
    return fields


def _top_k(c: _Config, n_experts: int) -> int:
    top_k = c.integer("num_experts_per_tok")
    if top_k > n_experts:
        raise c.error("num_experts_per_tok", f"at most the number of experts ({n_experts})")
    return top_k


def _mixtral(c: _Config) -> dict[str, Any]:
    fields = _llama_like(c)
    n_experts = c.integer("num_local_experts")
    fields["moe"] = MoeSpec(n_experts=n_experts, top_k=_top_k(c, n_experts),
                            expert_intermediate_size=fields["intermediate_size"])
    return fields


def _deepseek(c: _Config) -> dict[str, Any]:
    fields = _llama_like(c)
    nope, rope = c.integer("qk_nope_head_dim"), c.integer("qk_rope_head_dim")
    fields["head_dim"] = nope + rope     # query/key head width; HF's own head_dim key means the rope part
    fields["mla"] = MlaSpec(q_lora_rank=c.integer("q_lora_rank", default=0, minimum=0),
                            kv_lora_rank=c.integer("kv_lora_rank"), qk_nope_head_dim=nope, qk_rope_head_dim=rope,
                            v_head_dim=c.integer("v_head_dim"))
    if c.data.get("n_routed_experts") is not None:
        n_experts = c.integer("n_routed_experts")
        first_dense = c.integer("first_k_dense_replace", default=0, minimum=0)
        freq = c.integer("moe_layer_freq", default=1)
        # HF: MoE where i >= first_k_dense_replace and i % freq == 0; MoeSpec counts freq from the first MoE layer.
        if first_dense % freq:
            raise c.error("moe_layer_freq", f"a divisor of first_k_dense_replace ({first_dense})")
        fields["moe"] = MoeSpec(n_experts=n_experts, top_k=_top_k(c, n_experts),
                                expert_intermediate_size=c.integer("moe_intermediate_size"),
                                n_shared_experts=c.integer("n_shared_experts", default=0, minimum=0),
                                first_dense_layers=first_dense, layer_frequency=freq)
    return fields


def _gpt2(c: _Config) -> dict[str, Any]:
    hidden, heads = c.integer("n_embd"), c.integer("n_head")
    return dict(n_layers=c.integer("n_layer"), hidden_size=hidden, n_heads=heads, n_kv_heads=heads,
                head_dim=hidden // heads, intermediate_size=c.integer("n_inner", default=4 * hidden),
                vocab_size=c.integer("vocab_size"), max_position=c.integer("n_positions"),
                ffn_activation=c.activation("activation_function", _GELU), norm="layernorm",
                tie_embeddings=c.flag("tie_word_embeddings", True), attention_bias=True, mlp_bias=True,
                position_embedding="learned")


def _gpt_neox(c: _Config) -> dict[str, Any]:
    return dict(**_attention(c), intermediate_size=c.integer("intermediate_size"),
                ffn_activation=c.activation("hidden_act", _GELU), norm="layernorm",
                tie_embeddings=c.flag("tie_word_embeddings", False),
                attention_bias=c.flag("attention_bias", True), mlp_bias=True)


READERS: dict[str, Callable[[_Config], dict[str, Any]]] = {
    "llama": _llama,
    "mistral": _llama,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3_moe,
    "mixtral": _mixtral,
    "deepseek_v2": _deepseek,
    "deepseek_v3": _deepseek,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
}


def from_hf_config(path: str | Path) -> LlmSpec:
    """The LlmSpec described by a Hugging Face config.json at `path`."""
    path = Path(path)
    c = _read(path)
    model_type = c.data.get("model_type")
    if model_type is None:
        raise LlmConfigError(f"{path}: missing key 'model_type'")
    reader = READERS.get(model_type)
    if reader is None:
        raise c.error("model_type", f"one of {sorted(READERS)}")
    fields = reader(c)
    return LlmSpec(name=_name(path), sources=(f"Hugging Face config.json ({path})",), **fields)
