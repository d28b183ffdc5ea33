"""A plain-torch Llama-style decoder (RMSNorm, RoPE, GQA attention, SwiGLU MLP) with random
weights: the model the forward and training-step benchmarks time.  No download, no HF code.

Layer names follow the Llama reference so tensor parallelism can address them: attention has
q_proj/k_proj/v_proj/o_proj and the MLP gate_proj/up_proj/down_proj.  Head counts are taken from
the projection outputs (view(..., -1, head_dim)), so the same code runs on a tensor-parallel
shard holding a fraction of the heads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LlamaConfig:
    name: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int
    vocab: int = 128256
    tied: bool = False
    rope_theta: float = 500000.0


# Published config.json figures of each model.
LLAMA_3_1_8B = LlamaConfig("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336)
LLAMA_3_2_1B = LlamaConfig("llama-3.2-1b", 16, 2048, 32, 8, 64, 8192, tied=True)
LLAMA_3_2_3B = LlamaConfig("llama-3.2-3b", 28, 3072, 24, 8, 128, 8192, tied=True)
# Small enough for a CPU smoke run; same code path.
SMOKE = LlamaConfig("smoke-llama", 2, 64, 4, 2, 16, 128, vocab=256, tied=True)


def rope_tables(cfg: LlamaConfig, max_pos: int, device, dtype):
    """cos, sin of shape (max_pos, head_dim) for rotary embeddings (RoFormer, Su et al. 2021)."""
    inv = 1.0 / cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, device=device).float()
                                   / cfg.head_dim)
    angles = torch.outer(torch.arange(max_pos, device=device).float(), inv)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x, cos, sin):
    """x: (batch, heads, seq, head_dim); cos/sin: (seq, head_dim)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def attend(q, k, v, causal: bool, gqa: str):
    """SDPA with grouped-query heads, natively (enable_gqa) or by repeating K/V."""
    if gqa == "enable_gqa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    group = q.shape[1] // k.shape[1]
    if group > 1:
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig, **factory):
        super().__init__()
        self.head_dim = cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden, cfg.n_heads * cfg.head_dim, bias=False, **factory)
        self.k_proj = nn.Linear(cfg.hidden, cfg.n_kv_heads * cfg.head_dim, bias=False, **factory)
        self.v_proj = nn.Linear(cfg.hidden, cfg.n_kv_heads * cfg.head_dim, bias=False, **factory)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.hidden, bias=False, **factory)
        self.gqa = "enable_gqa"

    def forward(self, x, cos, sin, cache=None, pos: int | None = None):
        b, s, _ = x.shape
        q = self.q_proj(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, s, -1, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is None:
            out = attend(q, k, v, causal=True, gqa=self.gqa)
        else:
            # Decode: write this token's K/V at `pos`, attend over positions 0..pos.
            k_cache, v_cache = cache
            k_cache[:, :, pos:pos + s] = k
            v_cache[:, :, pos:pos + s] = v
            out = attend(q, k_cache[:, :, :pos + s], v_cache[:, :, :pos + s], causal=False,
                         gqa=self.gqa)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, -1))


class Mlp(nn.Module):
    def __init__(self, cfg: LlamaConfig, **factory):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden, cfg.ffn, bias=False, **factory)
        self.up_proj = nn.Linear(cfg.hidden, cfg.ffn, bias=False, **factory)
        self.down_proj = nn.Linear(cfg.ffn, cfg.hidden, bias=False, **factory)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: LlamaConfig, **factory):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.hidden, eps=1e-5, **factory)
        self.attn = Attention(cfg, **factory)
        self.mlp_norm = nn.RMSNorm(cfg.hidden, eps=1e-5, **factory)
        self.mlp = Mlp(cfg, **factory)

    def forward(self, x, cos, sin, cache=None, pos=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, cache, pos)
        return x + self.mlp(self.mlp_norm(x))


class Llama(nn.Module):
    """Decoder-only LM; `forward(ids)` returns logits of every position (training)."""

    def __init__(self, cfg: LlamaConfig, max_pos: int = 8192, device=None, dtype=None,
                 rope_dtype=torch.bfloat16):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.hidden, **factory)
        self.layers = nn.ModuleList(Block(cfg, **factory) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.hidden, eps=1e-5, **factory)
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False, **factory)
        if cfg.tied:
            self.lm_head.weight = self.embed.weight
        # bf16 tables: under autocast q and k come out of the projections in bf16 and must stay
        # there, or SDPA sees mixed dtypes.
        cos, sin = rope_tables(cfg, max_pos, device, rope_dtype)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def set_gqa(self, gqa: str) -> None:
        for layer in self.layers:
            layer.attn.gqa = gqa

    def hidden_states(self, ids, pos: int = 0, caches=None):
        s = ids.shape[1]
        cos, sin = self.cos[pos:pos + s], self.sin[pos:pos + s]
        x = self.embed(ids)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, None if caches is None else caches[i], pos)
        return self.norm(x)

    def forward(self, ids):
        return self.lm_head(self.hidden_states(ids))

    def prefill(self, ids):
        """Logits of the last position only, as a serving engine computes them."""
        return self.lm_head(self.hidden_states(ids)[:, -1])

    def decode(self, ids, caches, pos: int):
        """One new token per sequence (ids: (batch, 1)) at position `pos` of the KV cache."""
        return self.lm_head(self.hidden_states(ids, pos, caches)[:, -1])


def kv_caches(cfg: LlamaConfig, batch: int, max_len: int, device, dtype):
    """Per layer (k, v), each (batch, kv_heads, max_len, head_dim), filled with random values."""
    shape = (batch, cfg.n_kv_heads, max_len, cfg.head_dim)
    return [(torch.randn(shape, device=device, dtype=dtype),
             torch.randn(shape, device=device, dtype=dtype)) for _ in range(cfg.n_layers)]


def kv_bytes_per_token(cfg: LlamaConfig, elem_bytes: int = 2) -> int:
    """K and V of every layer for one token: 2 * layers * kv_heads * head_dim * bytes."""
    return 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * elem_bytes


def lm_loss(logits, targets):
    """Next-token cross-entropy in fp32, the usual training objective."""
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


def probe_gqa(device) -> str:
    """'enable_gqa' if SDPA runs grouped heads natively here (forward and backward), else
    'repeat_kv'."""
    try:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        q = torch.randn(1, 4, 16, 64, device=device, dtype=dtype, requires_grad=True)
        k = torch.randn(1, 2, 16, 64, device=device, dtype=dtype, requires_grad=True)
        F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True).sum().backward()
        return "enable_gqa"
    except Exception:
        return "repeat_kv"
