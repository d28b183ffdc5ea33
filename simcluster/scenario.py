"""The scenario schema: one pydantic model (extra keys forbidden), loaded from YAML, frozen after.

A scenario names the LLM, the workload, the SLO and either a concrete deployment (simulate) or a
search space (plan). Errors come out as one line: `FILE: key.path: what was expected`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator, model_validator

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
    path: str = Field(description="trace file, relative to the scenario file")
    format: Literal["auto", "azure", "burstgpt", "mooncake", "csv", "jsonl"] = Field("auto", description="reader to use; 'auto' guesses from the extension and header")
    rate_per_s: float | None = Field(None, gt=0, description="rescale arrivals to this mean rate (requests/s)")
    max_requests: int | None = Field(None, gt=0, description="keep only the first N requests")
    columns: dict[str, str] | None = Field(None, description="column mapping for generic CSV/JSONL")


class LengthDist(_Strict):
    """A token-length distribution: fixed(value), uniform(min, max), lognormal(mu+sigma | mean+sigma |
    mean+p50, clipped to min/max), zipf(a, min, max), empirical(path[, format, column])."""

    dist: Literal["fixed", "uniform", "lognormal", "zipf", "empirical"] = Field("fixed", description="distribution family")
    value: int | None = Field(None, gt=0, description="fixed: tokens")
    mu: float | None = Field(None, description="lognormal: mean of log(tokens)")
    mean: float | None = Field(None, gt=0, description="lognormal: mean tokens")
    sigma: float | None = Field(None, gt=0, description="lognormal: std of log(tokens)")
    p50: float | None = Field(None, gt=0, description="lognormal: median tokens")
    a: float | None = Field(None, gt=1, description="zipf: exponent")
    min: int | None = Field(None, gt=0, description="lower clip (tokens)")
    max: int | None = Field(None, gt=0, description="upper clip (tokens)")
    path: str | None = Field(None, description="empirical: trace file to resample lengths from")
    format: str | None = Field(None, description="empirical: trace format of path")
    column: str | None = Field(None, description="empirical: column holding the lengths")


class Synthetic(_Strict):
    arrival: Literal["poisson", "gamma", "diurnal"] = Field("poisson", description="arrival process")
    rate_per_s: float = Field(gt=0, description="mean arrival rate")
    n_requests: int = Field(gt=0, description="requests to generate")
    cv: float | None = Field(None, gt=0, description="gamma: coefficient of variation of inter-arrival times")
    peak_to_trough: float | None = Field(None, ge=1, description="diurnal: ratio of the highest to the lowest rate")
    period_s: float | None = Field(None, gt=0, description="diurnal: period of the rate cycle")
    prompt_tokens: LengthDist = Field(description="prompt length distribution")
    output_tokens: LengthDist = Field(description="output length distribution")


class Workload(_Strict):
    trace: TraceFile | None = Field(None, description="requests read from a trace file")
    synthetic: Synthetic | None = Field(None, description="requests generated from distributions")

    @model_validator(mode="after")
    def _one_source(self):
        if (self.trace is None) == (self.synthetic is None):
            raise ValueError("give exactly one of 'trace' or 'synthetic'")
        return self


class Slo(_Strict):
    ttft_s: float | None = Field(None, gt=0, description="time to first token target; null: none")
    tpot_s: float | None = Field(None, gt=0, description="time per output token target; null: none")
    e2e_s: float | None = Field(None, gt=0, description="end-to-end latency target; null: none")
    percentile: float = Field(90, gt=0, le=100, description="the percentile at which every target must hold")


class ReplicaSpec(_Strict):
    gpu: str = Field(description="GPU type (catalog name)")
    count: int = Field(1, gt=0, description="replicas of this shape")
    tp: int = Field(1, gt=0, description="tensor-parallel degree")
    pp: int = Field(1, gt=0, description="pipeline-parallel degree")
    ep: int = Field(1, gt=0, description="expert-parallel degree (MoE; at most tp × pp)")
    max_num_seqs: int = Field(256, gt=0, description="most sequences in one iteration")
    max_batched_tokens: int = Field(8192, gt=0, description="token budget per iteration (prefill chunk size)")
    chunked_prefill: bool = Field(True, description="split long prompts into chunks that share iterations with decodes")
    order: Literal["decode_first", "prefill_first"] = Field("decode_first", description="which waiting work the scheduler admits first")
    cuda_graphs: bool = Field(True, description="decode iterations replay CUDA graphs (small launch gaps)")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of GPU memory the engine may use (weights, activations, KV cache)")
    cpu_overhead_s: float = Field(0.0, ge=0, description="host time per iteration (scheduling, sampling)")
    dtype: Literal["bf16", "fp16", "fp8"] = Field("bf16", description="weight and compute format")
    kv_dtype: Literal["bf16", "fp16", "fp8"] = Field("bf16", description="KV-cache format")
    role: Literal["mixed", "prefill", "decode"] = Field("mixed", description="disaggregated pools: prefill / decode")
    preemption: Literal["recompute", "swap"] = Field("recompute", description="when the KV cache is full: recompute the prompt later, or swap KV to host")
    block_size: int = Field(16, gt=0, description="KV-cache block, tokens")
    watermark: float = Field(0.01, ge=0, lt=1, description="fraction of KV blocks admission keeps free")
    prefix_caching: bool = Field(False, description="keep KV blocks of seen prompt prefixes and reuse them")
    swap_space_bytes: float = Field(4 * 2**30, ge=0, description="host memory per GPU for swapped KV")
    host_to_device_bandwidth_bytes_per_s: float = Field(0.0, ge=0, description="0: the GPU's default node")
    moe_imbalance: float = Field(1.0, ge=1, description="busiest EP rank's share of routed tokens over the mean")
    attention_packing: Literal["varlen", "packed"] = Field("varlen", description="varlen: each sequence attends to its own keys (vLLM, SGLang); packed: one masked attention of all the batch's queries over all its keys (transformers paged|sdpa)")
    async_scheduling: bool = Field(False, description="the next batch is scheduled while the current one runs: a request arriving during a busy iteration joins the one after next (transformers async batching, vLLM async scheduling)")
    graph_padding_tokens: tuple[int, int] = Field((0, 0), description="query and cached-KV token multiples a CUDA-graph engine pads each batch to ((0, 0): none)")
    graph_capture_s: float = Field(0.0, ge=0, description="seconds the first batch of each padded shape pays to capture its CUDA graph (0: graphs captured at start-up)")
    graph_io_sets: int = Field(1, gt=0, description="graph sets used in turn, each capturing every shape (2 with transformers async batching)")

    _gpu = field_validator("gpu")(classmethod(lambda cls, v: _check_gpu(v)))


class Serving(_Strict):
    replicas: list[ReplicaSpec] = Field(min_length=1, description="replica groups of the deployment (one entry per GPU type / shape / role)")
    router: Literal["round_robin", "least_outstanding", "least_kv", "prefix_affinity"] = Field("least_outstanding", description="how arriving requests pick a replica")


def _powers_of_two(v: list[int], what: str) -> list[int]:
    if any(t <= 0 or t & (t - 1) for t in v):
        raise ValueError(f"{what} must be powers of two")
    return v


class _GpuSpace(_Strict):
    """Validation shared by search spaces that list GPU types and TP degrees."""

    @field_validator("gpus", check_fields=False)
    @classmethod
    def _gpus(cls, v):
        return [_check_gpu(g) for g in v]

    @field_validator("tp", check_fields=False)
    @classmethod
    def _tp(cls, v):
        return _powers_of_two(v, "tensor-parallel degrees")


class Search(_GpuSpace):
    """Serving plan search space (kind: serving); candidates are the product of the lists."""

    kind: Literal["serving"] = Field("serving", exclude=True, description="set from the scenario's kind")

    gpus: list[str] = Field(min_length=1, description="GPU types to try (catalog names, profiles/gpus/)")
    tp: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1, description="tensor-parallel degrees to try (powers of two, at most one node)")
    pp: list[int] = Field(default_factory=lambda: [1], min_length=1, description="pipeline-parallel degrees to try")
    ep: list[int] = Field(default_factory=lambda: [1], min_length=1, description="expert-parallel degrees to try (MoE only; at most tp × pp)")
    max_replicas: int = Field(16, gt=0, description="most replicas (or P/D units) one plan may use")
    max_num_seqs: list[int] = Field(default_factory=lambda: [256], min_length=1, description="scheduler batch limits to try (sequences per iteration)")
    max_batched_tokens: list[int] = Field(default_factory=lambda: [8192], min_length=1,
                                          description="token budget per iteration (the prefill chunk size)")
    chunked_prefill: list[bool] = Field(default_factory=lambda: [True], min_length=1, description="whether to split long prompts into chunks of max_batched_tokens")
    order: list[Literal["decode_first", "prefill_first"]] = Field(default_factory=lambda: ["decode_first"], min_length=1, description="scheduler orders to try: decodes first, or prefills first")
    disaggregated: list[bool] = Field(default_factory=lambda: [False], min_length=1, description="try aggregated replicas (false) and/or separate prefill and decode pools (true)")
    pd_ratio: list[str] = Field(default_factory=lambda: ["1:1", "1:2", "2:1"], min_length=1,
                                description="disaggregated: prefill:decode replicas per unit")
    objective: Literal["min_cost", "max_goodput_per_usd"] = Field("min_cost", description="'min_cost': cheapest plan meeting the SLO at the workload's rate; 'max_goodput_per_usd': most requests per USD")
    target_rate_per_s: float | None = Field(None, gt=0, description="rescale the workload to this rate")
    capacity_requests: int = Field(300, ge=20, description="requests replayed per capacity probe")
    simulate_at_least: int = Field(4, ge=1, description="plans simulated before bounds may drop the rest")
    tune_top: int = Field(2, ge=1, description="deployment shapes whose batching variants are all simulated")
    top: int = Field(10, gt=0, description="rows shown in the ranked table")

    @field_validator("pp", "ep", "max_num_seqs", "max_batched_tokens")
    @classmethod
    def _positive(cls, v):
        if any(x <= 0 for x in v):
            raise ValueError("expected positive integers")
        return v

    @field_validator("pd_ratio")
    @classmethod
    def _ratio(cls, v):
        for r in v:
            p, _, d = r.partition(":")
            if not (p.isdigit() and d.isdigit() and int(p) > 0 and int(d) > 0):
                raise ValueError(f"{r!r}: expected PREFILL:DECODE replica counts such as 1:2")
        return v


class TrainingSearch(_Strict):
    """Training plan search space (kind: training): one GPU type and count, one global batch."""

    kind: Literal["training"] = Field("training", exclude=True, description="set from the scenario's kind")

    gpu: str = Field(description="GPU type (catalog name)")
    n_gpus: int = Field(gt=0, description="GPUs in all")
    seq_len: int = Field(gt=0, description="tokens per training sequence")
    global_batch: int = Field(gt=0, description="sequences per iteration")
    tp: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1, description="tensor-parallel degrees to try")
    pp: list[int] | None = Field(None, description="None: every divisor of n_gpus that divides the layers")
    cp: list[int] = Field(default_factory=lambda: [1, 2], min_length=1, description="context-parallel degrees to try")
    ep: list[int] = Field(default_factory=lambda: [1], min_length=1, description="expert-parallel degrees to try (MoE only)")
    micro_batch: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1, description="micro-batch sizes to try (sequences)")
    virtual_stages: list[int] = Field(default_factory=lambda: [1, 2], min_length=1, description="pipeline chunks per stage to try (> 1: interleaved 1F1B)")
    recompute: list[Literal["none", "selective", "full"]] = Field(default_factory=lambda: ["none", "selective", "full"],
                                                                  min_length=1, description="activation recomputation to try")
    zero: list[Literal[0, 1, 2, 3]] = Field(default_factory=lambda: [0, 1, 2, 3], min_length=1, description="ZeRO stages to try (3 = fully sharded)")
    schedule: Literal["1f1b", "zero_bubble", "gpipe"] = Field("1f1b", description="for virtual_stages = 1")
    sequence_parallel: bool = Field(True, description="with tp > 1")
    simulate_top: int = Field(5, ge=0, description="best analytic plans simulated in full")
    top: int = Field(10, gt=0, description="rows shown in the ranked table")

    _gpu = field_validator("gpu")(classmethod(lambda cls, v: _check_gpu(v)))

    @field_validator("tp", "cp", "ep", "micro_batch", "virtual_stages", "pp")
    @classmethod
    def _positive(cls, v):
        if v is not None and any(x <= 0 for x in v):
            raise ValueError("expected positive integers")
        return v


class GpuMixSearch(_GpuSpace):
    """GPU mix (kind: gpu_mix): which serving options to rent per request-length bucket."""

    kind: Literal["gpu_mix"] = Field("gpu_mix", exclude=True, description="set from the scenario's kind")

    gpus: list[str] = Field(min_length=1, description="GPU types the mix may use")
    tp: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1, description="tensor-parallel degrees to try per GPU type")
    max_num_seqs: int = Field(256, gt=0, description="scheduler batch limit (sequences)")
    max_batched_tokens: int = Field(8192, gt=0, description="token budget per iteration")
    bucket_edges_tokens: list[int] = Field(default_factory=lambda: [1024, 4096],
                                           description="prompt-length bucket edges (tokens)")
    gpus_available: dict[str, int] = Field(default_factory=dict, description="most GPUs of each type that can be rented (missing: unlimited)")
    budget_usd_per_hour: float | None = Field(None, gt=0, description="spending cap; null: none")
    capacity_requests: int = Field(200, ge=20, description="requests replayed per capacity probe")
    options_per_gpu: int = Field(1, ge=1, description="cheapest plans per GPU type offered to the program")
    time_limit_s: float = Field(30.0, gt=0, description="integer program time limit")

    @field_validator("gpus_available")
    @classmethod
    def _available(cls, v):
        return {_check_gpu(g): n for g, n in v.items()}


class PlacementSearch(_Strict):
    """Expert placement (kind: expert_placement): routing loads and the GPUs to place them on."""

    kind: Literal["expert_placement"] = Field("expert_placement", exclude=True, description="set from the scenario's kind")

    loads: str | None = Field(None, description="CSV of per-layer expert loads; None: generated")
    generate_skew: float = Field(1.0, ge=0, description="generated loads: Zipf exponent of expert popularity")
    generate_tokens: int = Field(65536, gt=0, description="generated loads: tokens routed per layer")
    nodes: int = Field(gt=0, description="nodes holding the experts")
    gpus_per_node: int = Field(gt=0, description="GPUs per node")
    slots: int = Field(gt=0, description="physical expert slots in all")
    groups: int | None = Field(None, gt=0, description="expert groups (contiguous ids) for EPLB's hierarchical policy; null: none")
    policy: Literal["ilp", "eplb-hierarchical", "eplb-global"] = Field("ilp", description="'ilp': integer program warm-started from EPLB; or an EPLB baseline alone")
    time_limit_s: float = Field(60.0, gt=0, description="solver time for all layers together")


class Training(_Strict):
    """A concrete training plan (kind: training), simulated by `simcluster simulate`; the fields of
    simcluster.training.plan.TrainingPlan. Rank placement: tp innermost, then cp, dp, pp outermost."""

    gpu: str = Field(description="GPU type (catalog name)")
    n_gpus: int = Field(gt=0, description="dp × tp × pp × cp")
    seq_len: int = Field(gt=0, description="tokens per training sequence")
    micro_batch: int = Field(1, gt=0, description="sequences per micro-batch")
    global_batch: int | None = Field(None, gt=0, description="sequences per iteration; default micro_batch × dp")
    dp: int = Field(1, gt=0, description="data-parallel degree")
    tp: int = Field(1, gt=0, description="tensor-parallel degree")
    pp: int = Field(1, gt=0, description="pipeline-parallel degree")
    cp: int = Field(1, gt=0, description="context-parallel degree")
    ep: int = Field(1, gt=0, description="expert-parallel degree (MoE)")
    zero: Literal[0, 1, 2, 3] = Field(0, description="ZeRO stage; 3 = FSDP full shard")
    sequence_parallel: bool = Field(False, description="shard norms and dropout over the TP group along the sequence")
    schedule: Literal["gpipe", "1f1b", "interleaved", "zero_bubble"] = Field("1f1b", description="pipeline schedule")
    virtual_stages: int = Field(1, gt=0, description="model chunks per pipeline stage (interleaved schedule)")
    recompute: Literal["none", "selective", "full"] = Field("none", description="activation recomputation: none, selective (attention internals), full")
    dtype: Literal["bf16", "fp8"] = Field("bf16", description="GEMM compute format")
    optimizer_state_dtype: Literal["fp32", "bf16"] = Field("fp32", description="format of Adam's moments")
    master_weights: bool = Field(True, description="keep an fp32 master copy of the weights")
    param_dtype: Literal["fp32", "bf16"] = Field("bf16", description="format the weights are stored in")
    grad_dtype: Literal["fp32", "bf16"] = Field("fp32", description="format gradients are accumulated in")
    capacity_factor: float | None = Field(None, gt=0, description="MoE expert capacity; None = dropless")
    moe_imbalance: float = Field(1.0, ge=1, description="MoE: tokens on the busiest expert rank over the mean")
    flash_attention: bool = Field(True, description="fused attention (no stored s × s scores)")
    nodes: int | None = Field(None, gt=0, description="nodes used; null: n_gpus / GPUs per node")
    bucket_bytes: float = Field(25e6, gt=0, description="DDP gradient bucket (bytes)")

    _gpu = field_validator("gpu")(classmethod(lambda cls, v: _check_gpu(v)))

    @model_validator(mode="after")
    def _degrees(self):
        if self.dp * self.tp * self.pp * self.cp != self.n_gpus:
            raise ValueError(f"n_gpus: expected dp×tp×pp×cp = {self.dp * self.tp * self.pp * self.cp}, got {self.n_gpus}")
        return self


SEARCH_BY_KIND = {"serving": Search, "training": TrainingSearch, "gpu_mix": GpuMixSearch,
                  "expert_placement": PlacementSearch}


class Scenario(_Strict):
    name: str = Field(description="identifier shown in reports and used in output file names")
    description: str = Field("", description="one line saying what question the scenario asks")
    kind: Literal["serving", "training", "gpu_mix", "expert_placement"] = Field("serving", description="the question: serve (simulate or plan a serving deployment), train, pick a GPU mix, or place experts")
    seed: int = Field(0, description="seed of every random draw (synthetic workloads, generated loads); same seed, same result")
    llm: str = Field(description="catalog name (profiles/llms/) or path to a Hugging Face config.json")
    cost_model: Literal["calibrated", "roofline"] = Field("calibrated", description="'calibrated': measured tables where they exist, roofline fallback; 'roofline': datasheet only")
    workload: Workload | None = Field(None, description="the requests to serve (required for serving and gpu_mix)")
    slo: Slo = Field(Slo(), description="latency targets a plan must meet")
    serving: Serving | None = Field(None, description="the deployment `simcluster simulate` runs (kind serving)")
    search: Annotated[Union[Annotated[Search, Tag("serving")], Annotated[TrainingSearch, Tag("training")],
                            Annotated[GpuMixSearch, Tag("gpu_mix")], Annotated[PlacementSearch, Tag("expert_placement")]],
                      Discriminator(lambda v: v.get("kind") if isinstance(v, dict) else v.kind)] | None = Field(
        None, description="the space `simcluster plan` searches; its keys depend on kind")
    training: Training | None = Field(None, description="the training plan `simcluster simulate` runs (kind training)")

    _llm = field_validator("llm")(classmethod(lambda cls, v: _check_llm(v)))

    @model_validator(mode="before")
    @classmethod
    def _search_kind(cls, data):
        """The search section's schema depends on `kind`: tell the tagged union which one."""
        if isinstance(data, dict) and isinstance(data.get("search"), dict):
            data = {**data, "search": {**data["search"], "kind": data.get("kind", "serving")}}
        return data

    @model_validator(mode="after")
    def _workload_for_serving(self):
        if self.workload is None and self.kind in ("serving", "gpu_mix"):
            raise ValueError(f"workload: required for kind {self.kind!r}")
        return self

    # Set by load_scenario: where relative paths in the file are resolved from.
    base_dir: str = Field(".", exclude=True)


def _key_path(loc: tuple) -> str:
    parts = []
    for p in loc:
        if isinstance(p, int):
            parts[-1] = f"{parts[-1]}[{p}]" if parts else f"[{p}]"
        elif p in ("function-after", "function-before") or str(p).startswith(("function-", "literal[")):
            continue
        elif parts == ["search"] and p in SEARCH_BY_KIND:
            continue  # the union's tag: the kind, already stated at the top level
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
