"""LlmSpec: the shape of a transformer LLM (dense, GQA, MoE, MLA), from the catalog or a HF config.json."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from simcluster import catalog
from simcluster.catalog import CatalogError


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
    mlp_bias: bool = False              # biases on the FFN matrices (gpt2, gpt-neox); parameters only
    qk_norm: bool = False               # RMSNorm on each query and key head (Qwen3); parameters only
    position_embedding: str = "rope"    # 'rope' or 'learned' (gpt2/gpt3: a max_position x hidden table)

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


# ---- loading: catalog entries (profiles/llms/<name>.yaml) and paths --------------------------------------

FFN_ACTIVATIONS = ("swiglu", "gelu")
NORMS = ("rmsnorm", "layernorm")
POSITION_EMBEDDINGS = ("rope", "learned")

_INT_KEYS = ("n_layers", "hidden_size", "n_heads", "n_kv_heads", "head_dim", "intermediate_size", "vocab_size")
_OPTIONAL_KEYS = {"max_position": int, "tie_embeddings": bool, "attention_bias": bool, "mlp_bias": bool,
                  "qk_norm": bool}
_CHOICE_KEYS = {"ffn_activation": FFN_ACTIVATIONS, "norm": NORMS, "position_embedding": POSITION_EMBEDDINGS}
# key -> (required, smallest allowed value)
_MOE_KEYS = {"n_experts": (True, 1), "top_k": (True, 1), "expert_intermediate_size": (True, 1),
             "n_shared_experts": (False, 0), "first_dense_layers": (False, 0), "layer_frequency": (False, 1)}
_MLA_KEYS = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")


def llm_names() -> list[str]:
    return catalog.names("llms")


def _int(d: dict, key: str, where: str, minimum: int = 1, prefix: str = "") -> int:
    if key not in d or d[key] is None:
        raise CatalogError(f"{where}: missing key {prefix + key!r}")
    value = d[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise CatalogError(f"{where}: key {prefix + key!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _sub(d: dict, key: str, where: str) -> dict | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CatalogError(f"{where}: key {key!r} must be a mapping, got {value!r}")
    return value


def llm_from_mapping(d: dict, where: str) -> LlmSpec:
    """An LlmSpec from a catalog-format mapping; `where` (the file) prefixes every error message."""
    known = set(_INT_KEYS) | set(_OPTIONAL_KEYS) | set(_CHOICE_KEYS) | {"name", "moe", "mla", "sources"}
    for key in d:
        if key not in known:
            raise CatalogError(f"{where}: unknown key {key!r}; expected some of {sorted(known)}")
    if not isinstance(d.get("name"), str) or not d["name"]:
        raise CatalogError(f"{where}: missing key 'name' (a non-empty string)")
    kwargs: dict = {"name": d["name"]}
    for key in _INT_KEYS:
        kwargs[key] = _int(d, key, where)
    for key, kind in _OPTIONAL_KEYS.items():
        if key in d:
            if kind is int:
                kwargs[key] = _int(d, key, where)
            elif not isinstance(d[key], bool):
                raise CatalogError(f"{where}: key {key!r} must be true or false, got {d[key]!r}")
            else:
                kwargs[key] = d[key]
    for key, choices in _CHOICE_KEYS.items():
        if key in d:
            if d[key] not in choices:
                raise CatalogError(f"{where}: key {key!r} must be one of {list(choices)}, got {d[key]!r}")
            kwargs[key] = d[key]
    moe = _sub(d, "moe", where)
    if moe is not None:
        for key in moe:
            if key not in _MOE_KEYS:
                raise CatalogError(f"{where}: unknown key 'moe.{key}'; expected some of {sorted(_MOE_KEYS)}")
        kwargs["moe"] = MoeSpec(**{k: _int(moe, k, where, low, "moe.")
                                   for k, (required, low) in _MOE_KEYS.items() if required or k in moe})
        if kwargs["moe"].top_k > kwargs["moe"].n_experts:
            raise CatalogError(f"{where}: key 'moe.top_k' must be <= moe.n_experts")
    mla = _sub(d, "mla", where)
    if mla is not None:
        for key in mla:
            if key not in _MLA_KEYS:
                raise CatalogError(f"{where}: unknown key 'mla.{key}'; expected {list(_MLA_KEYS)}")
        kwargs["mla"] = MlaSpec(**{k: _int(mla, k, where, 0 if k == "q_lora_rank" else 1, "mla.")
                                   for k in _MLA_KEYS})
    if kwargs["n_heads"] % kwargs["n_kv_heads"]:
        raise CatalogError(f"{where}: key 'n_kv_heads' must divide n_heads ({kwargs['n_heads']}), "
                           f"got {kwargs['n_kv_heads']}")
    sources = d.get("sources", ())
    if not isinstance(sources, (list, tuple)) or not all(isinstance(s, str) for s in sources):
        raise CatalogError(f"{where}: key 'sources' must be a list of strings")
    kwargs["sources"] = tuple(sources)
    return LlmSpec(**kwargs)


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.endswith((".json", ".yaml", ".yml"))


def load_llm(name_or_path: str) -> LlmSpec:
    """An LlmSpec from a catalog name ('llama-3.1-8b'), a Hugging Face config.json (or its folder),
    or a catalog-format YAML file.

    Unknown names raise CatalogError listing the catalog; bad HF configs raise LlmConfigError.
    """
    # Imported here because hf_config builds on the dataclasses above.
    from simcluster.llm.hf_config import from_hf_config

    path = Path(name_or_path)
    if path.is_dir() and (path / "config.json").is_file():
        return from_hf_config(path / "config.json")
    if path.is_file():
        if path.suffix in (".yaml", ".yml"):
            try:
                data = yaml.safe_load(path.read_text())
            except yaml.YAMLError as e:
                raise CatalogError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
            if not isinstance(data, dict):
                raise CatalogError(f"{path}: expected a mapping at the top level")
            return llm_from_mapping(data, str(path))
        return from_hf_config(path)
    if _looks_like_path(name_or_path):
        raise CatalogError(f"LLM {name_or_path!r} is neither a file nor a catalog name; "
                           f"expected one of: {', '.join(llm_names())}")
    data = catalog.read_entry("llms", name_or_path)
    return llm_from_mapping(data, str(catalog.profiles_dir() / "llms" / f"{name_or_path}.yaml"))
