"""Serving memory accounting: weight bytes per GPU and how many KV-cache tokens fit beside them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from simcluster.llm import params
from simcluster.llm.ops import kv_bytes_per_token
from simcluster.llm.spec import LlmSpec
from simcluster.units import dtype_bytes


def weight_bytes_per_gpu(llm: LlmSpec, tp: int = 1, pp: int = 1, ep: int = 1, dtype: str = "bf16",
                         stage: int | None = None) -> float:
    """Weight bytes on the most loaded GPU of a TP×PP(×EP) replica.

    Dense and attention weights split over TP; routed experts over EP when ep > 1 (whole experts per
    GPU), else over TP; the embedding sits on the first stage and the LM head on the last.
    """
    b = dtype_bytes(dtype)
    per_stage = math.ceil(llm.n_layers / pp)
    stages = range(pp) if stage is None else [stage]
    worst = 0.0
    for s in stages:
        layers = range(s * per_stage, min(llm.n_layers, (s + 1) * per_stage))
        total = 0.0
        for i in layers:
            layer = params.layer_params(llm, i)
            if llm.is_moe_layer(i):
                routed = llm.moe.n_experts * params.expert_params(llm)
                total += (layer - routed) / tp + routed / (ep if ep > 1 else tp)
            else:
                total += layer / tp
        emb = llm.vocab_size * llm.hidden_size
        if s == 0:
            total += emb / tp
        if s == pp - 1 and not (llm.tie_embeddings and pp == 1):
            total += emb / tp
        worst = max(worst, total * b)
    return worst


@dataclass(frozen=True)
class ServingMemory:
    """How one GPU of a serving replica spends its memory (bytes)."""

    gpu_memory_bytes: float
    usable_bytes: float
    weight_bytes: float
    activation_bytes: float
    kv_cache_bytes: float
    kv_bytes_per_token: float

    @property
    def kv_capacity_tokens(self) -> int:
        if self.kv_cache_bytes <= 0:
            return 0
        return int(self.kv_cache_bytes // self.kv_bytes_per_token)

    @property
    def fits(self) -> bool:
        return self.kv_cache_bytes > 0


def serving_memory(llm: LlmSpec, gpu_memory_bytes: float, tp: int = 1, pp: int = 1, ep: int = 1,
                   dtype: str = "bf16", kv_dtype: str = "bf16", gpu_memory_utilization: float = 0.9,
                   max_batched_tokens: int = 8192) -> ServingMemory:
    """Split usable GPU memory into weights, peak activations and the KV cache (vLLM-style profiling).

    Activation peak is estimated as the widest intermediate of one forward over max_batched_tokens:
    the FFN gate/up output (2 × width / tp) plus a few hidden-size buffers, in the compute dtype.
    """
    usable = gpu_memory_bytes * gpu_memory_utilization
    weights = weight_bytes_per_gpu(llm, tp, pp, ep, dtype)
    width = llm.intermediate_size
    if llm.moe is not None:
        width = max(width, llm.moe.expert_intermediate_size * llm.moe.top_k)
    b = dtype_bytes(dtype)
    activations = max_batched_tokens * (2 * width / tp + 6 * llm.hidden_size) * b
    kv = usable - weights - activations
    return ServingMemory(gpu_memory_bytes, usable, weights, activations, kv,
                         kv_bytes_per_token(llm, tp, pp, kv_dtype))
