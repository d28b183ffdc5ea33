"""Reading Hugging Face config.json files, and the errors for ones simcluster cannot model."""

import dataclasses
import json
from pathlib import Path

import pytest

from simcluster.llm.hf_config import READERS, LlmConfigError, from_hf_config
from simcluster.llm.spec import load_llm

CONFIGS = Path(__file__).parent / "configs"


def _same_model(a, b):
    """Equal in every field except the name and provenance."""
    return dataclasses.replace(a, name="x", sources=()) == dataclasses.replace(b, name="x", sources=())


@pytest.mark.parametrize("name", ["llama-3.1-8b", "llama-3.2-1b", "qwen3-32b", "qwen3-30b-a3b", "mixtral-8x7b",
                                  "deepseek-v3"])
def test_hf_config_equals_catalog_entry(name):
    from_hf = from_hf_config(CONFIGS / name / "config.json")
    assert from_hf.name == name
    assert _same_model(from_hf, load_llm(name))


def test_every_supported_model_type_has_a_fixture():
    types = {json.loads(p.read_text())["model_type"] for p in CONFIGS.glob("*/config.json")}
    assert set(READERS) - {"mistral"} <= types


def test_qwen2_has_qkv_bias():
    spec = from_hf_config(CONFIGS / "qwen2.5-7b" / "config.json")
    assert spec.attention_bias and not spec.qk_norm and (spec.n_heads, spec.n_kv_heads, spec.head_dim) == (28, 4, 128)


def test_deepseek_v2_without_query_compression():
    spec = from_hf_config(CONFIGS / "deepseek-v2-lite" / "config.json")
    assert spec.mla.q_lora_rank == 0 and spec.mla.kv_lora_rank == 512
    assert (spec.moe.n_experts, spec.moe.top_k, spec.moe.n_shared_experts, spec.moe.first_dense_layers) == (64, 6, 2, 1)
    assert spec.n_moe_layers == 26


def test_gpt2_defaults():
    spec = from_hf_config(CONFIGS / "gpt2" / "config.json")
    assert spec.intermediate_size == 4 * 768                        # n_inner absent -> 4 x n_embd
    assert (spec.ffn_activation, spec.norm, spec.position_embedding) == ("gelu", "layernorm", "learned")
    assert spec.tie_embeddings and spec.attention_bias and spec.mlp_bias and spec.max_position == 1024


def test_gpt_neox_is_rotary_and_untied():
    spec = from_hf_config(CONFIGS / "pythia-160m" / "config.json")
    assert (spec.position_embedding, spec.tie_embeddings, spec.ffn_activation) == ("rope", False, "gelu")


def test_qwen3_moe_sparse_step_matches_hf_layer_rule(tmp_path):
    cfg = json.loads((CONFIGS / "qwen3-30b-a3b" / "config.json").read_text())
    cfg["decoder_sparse_step"] = 2
    path = _write(tmp_path, cfg)
    spec = from_hf_config(path)
    # HF Qwen3-MoE: layer i is sparse when (i + 1) % decoder_sparse_step == 0.
    assert [spec.is_moe_layer(i) for i in range(6)] == [(i + 1) % 2 == 0 for i in range(6)]


def test_qwen3_moe_leading_mlp_only_layers(tmp_path):
    cfg = json.loads((CONFIGS / "qwen3-30b-a3b" / "config.json").read_text())
    cfg["mlp_only_layers"] = [0, 1]
    spec = from_hf_config(_write(tmp_path, cfg))
    assert spec.moe.first_dense_layers == 2 and spec.n_moe_layers == 46


def test_a_checkpoint_folder_loads_through_load_llm():
    spec = load_llm(str(CONFIGS / "mixtral-8x7b"))
    assert spec.name == "mixtral-8x7b" and spec.moe.top_k == 2


def _write(tmp_path, cfg, name="config.json"):
    path = tmp_path / name
    path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    return path


def _llama():
    return json.loads((CONFIGS / "llama-3.1-8b" / "config.json").read_text())


@pytest.mark.parametrize("mutate,key", [
    (lambda c: c.pop("hidden_size"), "hidden_size"),
    (lambda c: c.pop("num_hidden_layers"), "num_hidden_layers"),
    (lambda c: c.pop("model_type"), "model_type"),
    (lambda c: c.update(model_type="bert"), "model_type"),
    (lambda c: c.update(hidden_act="relu"), "hidden_act"),
    (lambda c: c.update(num_key_value_heads=5), "num_key_value_heads"),
    (lambda c: c.update(intermediate_size="big"), "intermediate_size"),
    (lambda c: c.update(tie_word_embeddings="yes"), "tie_word_embeddings"),
    (lambda c: c.update(vocab_size=None), "vocab_size"),
])
def test_errors_name_the_file_and_the_key(tmp_path, mutate, key):
    cfg = _llama()
    mutate(cfg)
    path = _write(tmp_path, cfg)
    with pytest.raises(LlmConfigError) as err:
        from_hf_config(path)
    msg = str(err.value)
    assert str(path) in msg and repr(key) in msg and "\n" not in msg
    assert isinstance(err.value, ValueError)


def test_moe_specific_errors(tmp_path):
    cfg = json.loads((CONFIGS / "mixtral-8x7b" / "config.json").read_text())
    del cfg["num_local_experts"]
    with pytest.raises(LlmConfigError, match="'num_local_experts'"):
        from_hf_config(_write(tmp_path, cfg))
    cfg = json.loads((CONFIGS / "qwen3-30b-a3b" / "config.json").read_text())
    cfg["mlp_only_layers"] = [5, 9]
    with pytest.raises(LlmConfigError, match="'mlp_only_layers'"):
        from_hf_config(_write(tmp_path, cfg))
    cfg = json.loads((CONFIGS / "deepseek-v3" / "config.json").read_text())
    cfg["num_experts_per_tok"] = 300
    with pytest.raises(LlmConfigError, match="'num_experts_per_tok'"):
        from_hf_config(_write(tmp_path, cfg))


@pytest.mark.parametrize("text,fragment", [
    ('{"model_type": "llama", ', "not valid JSON"),
    ("[1, 2, 3]", "JSON object"),
])
def test_malformed_files(tmp_path, text, fragment):
    path = _write(tmp_path, text)
    with pytest.raises(LlmConfigError, match=fragment) as err:
        from_hf_config(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(LlmConfigError, match="cannot read"):
        from_hf_config(tmp_path / "nope" / "config.json")
