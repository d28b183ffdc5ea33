"""Parameter counts against published figures (and exact checkpoint tensor counts where known)."""

from pathlib import Path

import pytest

from simcluster.llm.hf_config import from_hf_config
from simcluster.llm.params import (
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
from simcluster.llm.spec import load_llm

CONFIGS = Path(__file__).parent / "configs"

# (catalog name, published total, published active or None) — model cards and papers cited in profiles/llms.
PUBLISHED = [
    ("llama-3.1-8b", 8.03e9, None),
    ("llama-3.1-70b", 70.6e9, None),
    ("llama-3.1-405b", 405.9e9, None),
    ("llama-3.2-1b", 1.24e9, None),
    ("llama-3.2-3b", 3.21e9, None),
    ("qwen3-32b", 32.8e9, None),
    ("qwen3-30b-a3b", 30.5e9, 3.3e9),
    ("mixtral-8x7b", 46.7e9, 12.9e9),
    ("deepseek-v3", 671e9, 37e9),
    ("gpt3-175b", 175e9, None),
]


@pytest.mark.parametrize("name,total,active", PUBLISHED)
def test_totals_match_published_figures_within_2_percent(name, total, active):
    spec = load_llm(name)
    assert total_params(spec) == pytest.approx(total, rel=0.02)
    if active is None:
        assert active_params(spec) == total_params(spec)          # dense: every weight is touched
    else:
        assert active_params(spec) == pytest.approx(active, rel=0.02)
        assert active_params(spec) < total_params(spec)


# Exact tensor-element counts of the released checkpoints (sum of safetensors shapes).
EXACT = [
    ("llama-3.1-8b", 8_030_261_248),
    ("llama-3.2-1b", 1_235_814_400),
    ("mixtral-8x7b", 46_702_792_704),
    ("gpt2", 124_439_808),
    ("pythia-160m", 162_322_944),
]


@pytest.mark.parametrize("name,count", EXACT)
def test_exact_checkpoint_counts(name, count):
    assert total_params(from_hf_config(CONFIGS / name / "config.json")) == count


def test_deepseek_v3_matches_its_own_breakdown():
    # DeepSeek's README: 671B main-model parameters; 36.6B activated, counting the output head but
    # not the input embedding.
    spec = load_llm("deepseek-v3")
    without_input_embedding = active_params(spec) - spec.vocab_size * spec.hidden_size
    assert without_input_embedding == pytest.approx(36.6e9, rel=0.005)
    assert total_params(spec) == pytest.approx(671e9, rel=0.002)


def test_deepseek_v2_lite_published_sizes():
    spec = from_hf_config(CONFIGS / "deepseek-v2-lite" / "config.json")   # MLA without query compression
    assert total_params(spec) == pytest.approx(15.7e9, rel=0.01)
    assert active_params(spec) - spec.vocab_size * spec.hidden_size == pytest.approx(2.4e9, rel=0.03)


def test_qwen2_counts_the_qkv_biases():
    spec = from_hf_config(CONFIGS / "qwen2.5-7b" / "config.json")
    # Qwen2.5-7B: 7.61B. The o_proj bias simcluster also counts is hidden_size per layer (0.1M in total).
    assert total_params(spec) == pytest.approx(7.6156e9, rel=1e-4)


def test_gqa_attention_formula():
    spec = load_llm("llama-3.1-8b")
    h, d = 4096, 128
    assert attention_params(spec) == h * 32 * d + 2 * h * 8 * d + 32 * d * h


def test_mla_attention_formula():
    spec = load_llm("deepseek-v3")
    h = 7168
    q = h * 1536 + 1536 + 1536 * 128 * (128 + 64)
    kv = h * (512 + 64) + 512 + 512 * 128 * (128 + 128)
    o = 128 * 128 * h
    assert attention_params(spec) == q + kv + o


def test_dense_and_moe_layers_of_deepseek_v3():
    spec = load_llm("deepseek-v3")
    h = 7168
    assert ffn_params(spec, 0) == ffn_params(spec, 2) == 3 * h * 18432          # 3 dense layers
    assert expert_params(spec) == 3 * h * 2048
    assert router_params(spec) == 256 * h
    assert ffn_params(spec, 3) == (256 + 1) * 3 * h * 2048 + 256 * h          # 1 shared + 256 routed
    assert layer_params(spec, 60) == attention_params(spec) + ffn_params(spec, 60) + norm_params(spec)
    assert spec.n_moe_layers == 58


def test_layers_sum_to_total():
    for name in ("qwen3-30b-a3b", "gpt3-175b", "llama-3.2-3b"):
        spec = load_llm(name)
        layers = sum(layer_params(spec, i) for i in range(spec.n_layers))
        assert total_params(spec) == layers + embedding_params(spec) + final_norm_params(spec)


def test_embeddings_tied_untied_and_learned_positions():
    assert embedding_params(load_llm("llama-3.2-1b")) == 128256 * 2048                   # tied
    assert embedding_params(load_llm("llama-3.1-8b")) == 2 * 128256 * 4096               # untied
    assert embedding_params(load_llm("gpt3-175b")) == 50257 * 12288 + 2048 * 12288      # tied + positions


def test_norms_by_kind():
    assert norm_params(load_llm("llama-3.1-8b")) == 2 * 4096                  # two RMSNorm gains
    assert norm_params(load_llm("gpt3-175b")) == 2 * 2 * 12288                # two LayerNorms, gain + bias
    assert norm_params(load_llm("qwen3-32b")) == 2 * 5120 + 2 * 128           # + per-head q/k norms


def test_gpt3_matches_12_l_d_squared():
    # Kaplan et al. 2020, Table 1: non-embedding parameters ~ 12 n_layer d_model^2 for a 4x GELU FFN.
    spec = load_llm("gpt3-175b")
    non_embedding = total_params(spec) - embedding_params(spec)
    assert non_embedding == pytest.approx(12 * 96 * 12288**2, rel=0.001)


def test_errors():
    with pytest.raises(ValueError, match="not a mixture-of-experts"):
        expert_params(load_llm("llama-3.1-8b"))
    with pytest.raises(IndexError):
        ffn_params(load_llm("llama-3.1-8b"), 32)
