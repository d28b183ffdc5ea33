"""The scenario schema: one pydantic model (extra keys forbidden), loaded from YAML, frozen after.

A scenario names the LLM, the workload, the SLO and either a concrete deployment (simulate) or a
search space (plan). Errors come out as one line: `FILE: key.path: what was expected`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from simcluster import catalog


class ScenarioError(ValueError):
    """A user mistake in a scenario file or override: the message is one line for the terminal."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_gpu(name: str) -> str:
    if name not in catalog.names("gpus"):
        raise ValueError(f"unknown GPU {name!r}; expected one of: {', '.join(catalog.names('gpus'))}")
    return name


def _check_llm(name: str) -> str:
    if name.endswith(".json"):
        return name  # a Hugging Face config.json; read and checked when loaded
    if name not in catalog.names("llms"):
        raise ValueError(f"unknown LLM {name!r}; expected one of: {', '.join(catalog.names('llms'))} "
                         f"or a path to a Hugging Face config.json")
    return name


class TraceFile(_Strict):
    path: str
    format: Literal["auto", "azure", "burstgpt", "mooncake", "csv", "jsonl"] = "auto"
    rate_per_s: float | None = Field(None, gt=0, description="rescale arrivals to this mean rate (requests/s)")
    max_requests: int | None = Field(None, gt=0, description="keep only the first N requests")
    columns: dict[str, str] | None = Field(None, description="column mapping for generic CSV/JSONL")


class LengthDist(_Strict):
    """A token-length distribution: fixed(value), uniform(min, max), lognormal(mu+sigma | mean+sigma |
    mean+p50, clipped to min/max), zipf(a, min, max), empirical(path[, format, column])."""

    dist: Literal["fixed", "uniform", "lognormal", "zipf", "empirical"] = "fixed"
    value: int | None = Field(None, gt=0, description="fixed: tokens")
    mu: float | None = Field(None, description="lognormal: mean of log(tokens)")
    mean: float | None = Field(None, gt=0, description="lognormal: mean tokens")
    sigma: float | None = Field(None, gt=0, description="lognormal: std of log(tokens)")
    p50: float | None = Field(None, gt=0, description="lognormal: median tokens")
    a: float | None = Field(None, gt=1, description="zipf: exponent")
    min: int | None = Field(None, gt=0, description="lower clip (tokens)")
    max: int | None = Field(None, gt=0, description="upper clip (tokens)")
    path: str | None = Field(None, description="empirical: trace file to resample lengths from")
    format: str | None = None
    column: str | None = None


class Synthetic(_Strict):
    arrival: Literal["poisson", "gamma", "diurnal"] = "poisson"
    rate_per_s: float = Field(gt=0)
    n_requests: int = Field(gt=0)
    cv: float | None = Field(None, gt=0, description="gamma: coefficient of variation of inter-arrival times")
    peak_to_trough: float | None = Field(None, ge=1)
    period_s: float | None = Field(None, gt=0)
    prompt_tokens: LengthDist
    output_tokens: LengthDist


class Workload(_Strict):
    trace: TraceFile | None = None
    synthetic: Synthetic | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.trace is None) == (self.synthetic is None):
            raise ValueError("give exactly one of 'trace' or 'synthetic'")
        return self


class Slo(_Strict):
    ttft_s: float | None = Field(None, gt=0)
    tpot_s: float | None = Field(None, gt=0)
    e2e_s: float | None = Field(None, gt=0)
    percentile: float = Field(90, gt=0, le=100)


class ReplicaSpec(_Strict):
    gpu: str
    count: int = Field(1, gt=0)
    tp: int = Field(1, gt=0)
    pp: int = Field(1, gt=0)
    ep: int = Field(1, gt=0)
    max_num_seqs: int = Field(256, gt=0)
    max_batched_tokens: int = Field(8192, gt=0)
    chunked_prefill: bool = True
    order: Literal["decode_first", "prefill_first"] = "decode_first"
    cuda_graphs: bool = True
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    cpu_overhead_s: float = Field(0.0, ge=0)
    dtype: Literal["bf16", "fp16", "fp8"] = "bf16"
    kv_dtype: Literal["bf16", "fp16", "fp8"] = "bf16"

    _gpu = field_validator("gpu")(classmethod(lambda cls, v: _check_gpu(v)))


class Serving(_Strict):
    replicas: list[ReplicaSpec] = Field(min_length=1)
    router: Literal["round_robin", "least_outstanding", "least_kv"] = "least_outstanding"


class Search(_Strict):
    gpus: list[str] = Field(min_length=1)
    tp: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1)
    max_replicas: int = Field(16, gt=0)
    max_num_seqs: list[int] = Field(default_factory=lambda: [256], min_length=1)
    max_batched_tokens: list[int] = Field(default_factory=lambda: [8192], min_length=1)
    top: int = Field(10, gt=0, description="rows shown in the ranked table")

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v):
        return [_check_gpu(g) for g in v]

    @field_validator("tp")
    @classmethod
    def _tp(cls, v):
        if any(t <= 0 or t & (t - 1) for t in v):
            raise ValueError("tensor-parallel degrees must be powers of two")
        return v


class Scenario(_Strict):
    name: str
    description: str = ""
    kind: Literal["serving"] = "serving"
    seed: int = 0
    llm: str
    cost_model: Literal["calibrated", "roofline"] = "calibrated"
    workload: Workload
    slo: Slo = Slo()
    serving: Serving | None = None
    search: Search | None = None

    _llm = field_validator("llm")(classmethod(lambda cls, v: _check_llm(v)))

    # Set by load_scenario: where relative paths in the file are resolved from.
    base_dir: str = Field(".", exclude=True)


def _key_path(loc: tuple) -> str:
    parts = []
    for p in loc:
        if isinstance(p, int):
            parts[-1] = f"{parts[-1]}[{p}]" if parts else f"[{p}]"
        elif p in ("function-after", "function-before") or str(p).startswith(("function-", "literal[")):
            continue
        else:
            parts.append(str(p))
    return ".".join(parts) or "(top level)"


def _one_line(source: str, err: ValidationError) -> str:
    e = err.errors()[0]
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif e["type"] == "missing":
        msg = "required key is missing"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {_key_path(e['loc'])}: {msg}{more}"


def apply_overrides(data: dict, overrides: list[str], source: str) -> dict:
    """Apply `key.path=value` overrides (value read as YAML) to a raw scenario mapping."""
    for item in overrides:
        if "=" not in item:
            raise ScenarioError(f"--set {item}: expected key.path=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ScenarioError(f"--set {key}: cannot read {raw!r} as a value") from None
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            if isinstance(node, list) and p.isdigit() and int(p) < len(node):
                node = node[int(p)]
                continue
            if not isinstance(node, dict):
                raise ScenarioError(f"{source}: --set {key}: {p!r} is not a mapping")
            node = node.setdefault(p, {})
        last = parts[-1]
        if isinstance(node, list) and last.isdigit() and int(last) < len(node):
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ScenarioError(f"{source}: --set {key}: parent is not a mapping")
    return data


def parse_scenario(data, source: str = "<scenario>", base_dir: str = ".") -> Scenario:
    """Validate a raw mapping into a frozen Scenario; ScenarioError on any problem."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{source}: (top level): expected a mapping of keys, got {type(data).__name__}")
    try:
        return Scenario.model_validate({**data, "base_dir": base_dir})
    except ValidationError as err:
        raise ScenarioError(_one_line(source, err)) from None


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read a YAML scenario file, apply --set overrides, validate.

    >>> s = load_scenario("scenarios/serve-llama8b-chat.yaml")
    >>> s.llm
    'llama-3.1-8b'
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ScenarioError(f"{source}: cannot read file ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(err, "problem", None) or "malformed YAML"
        raise ScenarioError(f"{source}: YAML syntax error at {where}: {problem}") from None
    if data is None:
        raise ScenarioError(f"{source}: (top level): the file is empty")
    if overrides:
        data = apply_overrides(data, overrides, source)
    return parse_scenario(data, source, str(path.resolve().parent))
