"""The LLM catalog and load_llm: names, YAML entries, paths, and their errors."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from simcluster.catalog import CatalogError, profiles_dir
from simcluster.llm.hf_config import LlmConfigError
from simcluster.llm.spec import LlmSpec, MlaSpec, MoeSpec, llm_from_mapping, llm_names, load_llm

EXPECTED = {"llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.2-1b", "llama-3.2-3b", "qwen3-32b",
            "qwen3-30b-a3b", "mixtral-8x7b", "deepseek-v3", "gpt3-175b"}
CONFIGS = Path(__file__).parent / "configs"


def test_catalog_holds_the_expected_models():
    assert EXPECTED <= set(llm_names())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_entry_loads_with_sources(name):
    spec = load_llm(name)
    assert isinstance(spec, LlmSpec) and spec.name == name and spec.sources
    assert spec.n_heads % spec.n_kv_heads == 0
    if spec.mla is None:
        assert spec.n_heads * spec.head_dim >= spec.hidden_size


def test_deepseek_v3_shape():
    spec = load_llm("deepseek-v3")
    assert spec.moe == MoeSpec(n_experts=256, top_k=8, expert_intermediate_size=2048, n_shared_experts=1,
                               first_dense_layers=3, layer_frequency=1)
    assert spec.mla == MlaSpec(q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
                               v_head_dim=128)
    assert (spec.n_layers, spec.hidden_size, spec.n_heads, spec.vocab_size) == (61, 7168, 128, 129280)
    assert [spec.is_moe_layer(i) for i in range(5)] == [False, False, False, True, True]


def test_gpt3_shape():
    spec = load_llm("gpt3-175b")
    assert (spec.ffn_activation, spec.norm, spec.position_embedding) == ("gelu", "layernorm", "learned")
    assert spec.attention_bias and spec.mlp_bias and spec.max_position == 2048


def test_unknown_name_lists_the_catalog():
    with pytest.raises(CatalogError) as err:
        load_llm("llama-9-1t")
    msg = str(err.value)
    assert "llama-9-1t" in msg and "deepseek-v3" in msg and "\n" not in msg


def test_missing_path_is_reported_as_such():
    with pytest.raises(CatalogError, match="neither a file nor a catalog name"):
        load_llm("/no/such/config.json")


def test_hf_path_and_yaml_path(tmp_path):
    assert load_llm(str(CONFIGS / "llama-3.1-8b" / "config.json")).n_layers == 32
    entry = yaml.safe_load((profiles_dir() / "llms" / "qwen3-32b.yaml").read_text())
    entry["name"] = "my-qwen"
    path = tmp_path / "my-qwen.yaml"
    path.write_text(yaml.safe_dump(entry))
    mine = load_llm(str(path))
    assert mine.name == "my-qwen" and dataclasses.replace(mine, name="qwen3-32b") == load_llm("qwen3-32b")


def test_bad_hf_config_through_load_llm(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "t5"}')
    with pytest.raises(LlmConfigError, match="'model_type'"):
        load_llm(str(path))


def _entry(**changes):
    d = yaml.safe_load((profiles_dir() / "llms" / "mixtral-8x7b.yaml").read_text())
    for key, value in changes.items():
        if value is None:
            d.pop(key, None) if "." not in key else d[key.split(".")[0]].pop(key.split(".")[1])
        elif "." in key:
            d[key.split(".")[0]][key.split(".")[1]] = value
        else:
            d[key] = value
    return d


@pytest.mark.parametrize("changes,key", [
    ({"hidden_size": None}, "hidden_size"),
    ({"n_layers": 0}, "n_layers"),
    ({"n_layers": "32"}, "n_layers"),
    ({"norm": "batchnorm"}, "norm"),
    ({"ffn_activation": "relu"}, "ffn_activation"),
    ({"tie_embeddings": "no"}, "tie_embeddings"),
    ({"n_kv_heads": 5}, "n_kv_heads"),
    ({"n_expert": 8}, "n_expert"),
    ({"moe.top_k": None}, "moe.top_k"),
    ({"moe.top_k": 9}, "moe.top_k"),
    ({"moe.n_shared": 1}, "moe.n_shared"),
    ({"mla": {"kv_lora_rank": 512}}, "mla.q_lora_rank"),
    ({"moe": [1, 2]}, "moe"),
])
def test_malformed_entries_name_the_file_and_key(changes, key):
    with pytest.raises(CatalogError) as err:
        llm_from_mapping(_entry(**changes), "profiles/llms/x.yaml")
    msg = str(err.value)
    assert msg.startswith("profiles/llms/x.yaml: ") and repr(key) in msg and "\n" not in msg


def test_catalog_entry_with_a_bad_key_fails_at_load(tmp_path, monkeypatch):
    (tmp_path / "llms").mkdir()
    (tmp_path / "llms" / "bad.yaml").write_text(yaml.safe_dump(_entry(name="bad", vocab_size=-1)))
    monkeypatch.setenv("SIMCLUSTER_PROFILES", str(tmp_path))
    with pytest.raises(CatalogError) as err:
        load_llm("bad")
    assert "bad.yaml" in str(err.value) and "'vocab_size'" in str(err.value)


@pytest.mark.parametrize("text,fragment", [
    ("name: [unclosed\n", "not valid YAML"),
    ("- just\n- a list\n", "mapping at the top level"),
    ("name: x\nsources: 7\n", None),
])
def test_malformed_yaml_files(tmp_path, text, fragment):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as err:
        load_llm(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    if fragment:
        assert fragment in str(err.value)
