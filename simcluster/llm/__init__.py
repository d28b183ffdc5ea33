"""LLMs: their shapes (LlmSpec) from the catalog or a Hugging Face config.json, and parameter counts."""

from simcluster.llm.hf_config import LlmConfigError, from_hf_config
from simcluster.llm.params import (
    active_ffn_params,
    active_params,
    attention_params,
    embedding_params,
    expert_params,
    ffn_params,
    final_norm_params,
    layer_params,
    norm_params,
    router_params,
    total_params,
)
from simcluster.llm.spec import LlmSpec, MlaSpec, MoeSpec, llm_from_mapping, llm_names, load_llm

__all__ = [
    "LlmConfigError", "from_hf_config",
    "active_ffn_params", "active_params", "attention_params", "embedding_params", "expert_params", "ffn_params",
    "final_norm_params", "layer_params", "norm_params", "router_params", "total_params",
    "LlmSpec", "MlaSpec", "MoeSpec", "llm_from_mapping", "llm_names", "load_llm",
]
