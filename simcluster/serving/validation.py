"""Predicting measured runs of a real serving engine (profiles/measured/<gpu>/engine*_*, written by
`python -m calibrate.engine`: transformers' continuous batching serving slices of a public trace, with
fixed-concurrency probe phases before (fit_*) and after (late_*) the rates), as
simcluster/training/validation.py does for training steps.

simcluster replays the exact same request files with that engine's policy:

- scheduler: FIFO = decode-first continuous batching with chunked prefill, 2048-token budget,
  at most 128 sequences, 256-token KV blocks, new prefills held back under 15 % free blocks;
- launch: CUDA graphs as the run's provenance records them; with graphs, every batch padded to
  the engine's query and KV padding intervals (`graph_padding_tokens`), as the engine pads it;
- attention: `attention_packing="packed"`: the engine's `paged|sdpa` path runs one masked SDPA
  of all the batch's queries over all the KV it read (FLOPs grow with queries x keys), and on
  top of the kernel's time it pays a cost per KV token read (gathering the pages and repeating
  K/V to every query head: `PackedAttentionKernels`);
- per-iteration host overhead `cpu_overhead_s`: what the engine's iteration takes beyond the
  modelled GPU time;
- a run with warm-ups: simcluster serves the warm-up burst's own request file on the same replica
  first and the rate's requests from the time the engine started them (the provenance's
  rate_start_after_warm_start_s later), so the replica holds the graphs its own replay of the
  warm-up captured, no more and no fewer; only the rate's requests are compared.

The fitted engine parameters (cpu_overhead_s, the per-KV-token cost and, with CUDA graphs, the cost
of a capture) come from the engine's own per-iteration log of the probe phases only (fit_* before
the rates, late_* after them, on engines of their own; not the warm-ups): every rate is predicted
out of sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from simcluster import catalog
from simcluster.cost import CostModel
from simcluster.hardware.gpu import load_gpu
from simcluster.llm.spec import LlmSpec, load_llm
from simcluster.serving.batching import Batching
from simcluster.serving.metrics import request_metrics
from simcluster.serving.simulate import ReplicaGroup, simulate_serving
from simcluster.serving.step import StepTimer
from simcluster.workload import Trace
from simcluster.workload.readers import read_table

PROBES = ("fit_", "late_")   # phases the engine parameters are fitted on; rate_* phases are checked
METRICS = ("ttft_s", "tpot_s", "e2e_s")
PACKING = "packed"
CAPTURE_LAUNCH_S = 0.02   # a forward whose launch took longer was run eagerly and captured


@dataclass(frozen=True)
class EngineRun:
    """One engine run's files in profiles/measured/<gpu>/, all named `<prefix>...`."""

    name: str
    prefix: str
    gpu: str = "h100-sxm"

    def path(self, what: str) -> Path:
        return catalog.profiles_dir() / "measured" / self.gpu / f"{self.prefix}{what}"

    @property
    def present(self) -> bool:
        return self.path("provenance.yaml").exists()

    @property
    def rates(self) -> tuple[str, ...]:
        """Rate tags served, lowest rate first."""
        folder = self.path("").parent
        tags = [f.name[len(self.prefix) + len("requests_"):-4] for f in folder.glob(f"{self.prefix}requests_*.csv")]
        tags = [t for t in tags if t != "fit" and self.path(f"trace_{t}.csv").exists()]
        return tuple(sorted(tags, key=lambda t: float(t.replace("p", "."))))

    def provenance(self) -> dict:
        return yaml.safe_load(self.path("provenance.yaml").read_text())

    def llm(self) -> LlmSpec:
        """The model shape the engine served (random weights of a catalog model's shape)."""
        return load_llm(self.provenance()["model_shape"])

    def warmup(self, tag: str) -> tuple[pd.DataFrame, float] | None:
        """The warm-up burst served on rate `tag`'s engine before it (its request rows, times from its
        own start) and how long after its start the rate started (s); None for a run without warm-ups."""
        path = self.path(f"requests_warm_{tag}.csv")
        if not path.exists():
            return None
        served = [r for r in self.provenance()["rates"] if f"{r['rate_per_s']:g}".replace(".", "p") == tag]
        return pd.read_csv(path), float(served[0]["rate_start_after_warm_start_s"])

    def engine(self) -> dict:
        """How the run's engine computed: CUDA graphs, async batching, padding intervals (tokens)."""
        r = self.provenance()["engine_settings_resolved"]
        graphs = r.get("use_cuda_graph") or [False, False]
        graphs = any(graphs) if isinstance(graphs, list) else bool(graphs)
        pad = (int(r.get("q_padding_interval_size") or 0), int(r.get("kv_padding_interval_size") or 0))
        async_ = bool(r.get("use_async_batching"))
        return {"cuda_graphs": graphs, "async": async_, "padding": pad if graphs else (0, 0),
                "io_sets": 2 if async_ else 1}


class PackedAttentionKernels:
    """Kernel times of another model plus the packed-SDPA cost per KV token read (per layer).

    The transformers `paged|sdpa` path copies every sequence's K and V out of the pages and repeats
    them from the KV heads to all query heads before its one masked SDPA: on top of the kernel's
    time it pays a cost that grows with the KV tokens read in the iteration.
    """

    def __init__(self, inner, per_kv_token_layer_s: float):
        self.inner = inner
        self.per_kv_token_layer_s = per_kv_token_layer_s

    def time_s(self, op):
        t, method = self.inner.time_s(op)
        if op.kind in ("attention_decode", "attention_prefill"):
            kv_tokens = op.shape["batch"] * op.shape["context_len"]
            return t + self.per_kv_token_layer_s * kv_tokens, method + "+packed-sdpa"
        return t, method


def engine_cost(base: CostModel, per_kv_token_layer_s: float) -> CostModel:
    """`base` with the packed-SDPA term on its attention kernels."""
    return CostModel(base.gpu, base.links, PackedAttentionKernels(base.kernels, per_kv_token_layer_s), base.launch,
                     base.collectives)


def probe_phases(iterations: pd.DataFrame, prefixes=PROBES) -> list[str]:
    return sorted(p for p in iterations["phase"].unique() if p.startswith(prefixes))


def decode_iterations(iterations: pd.DataFrame, phases, engine: dict) -> pd.DataFrame:
    """Decode-only iterations of `phases` with their wall time: prepare + forward + update, or with
    async batching (batch N+1 prepared while N computes) the time from one iteration's start to the
    next's within the phase."""
    d = iterations[iterations["phase"].isin(list(phases))].sort_values("start_s")
    if engine["async"]:
        d = d.assign(wall_s=d.groupby("phase")["start_s"].diff(-1).abs())
    else:
        d = d.assign(wall_s=d["prepare_s"] + d["step_s"] + d["update_s"])
    return d[(d["n_prefill_chunks"] == 0) & d["wall_s"].notna()]


def cached_keys_read(kv_read_tokens, engine: dict) -> np.ndarray:
    """Cached KV tokens an iteration reads, padded as the engine pads them (the regressor of the
    per-KV-token cost; the batch's own new keys, a few dozen, fall into the intercept)."""
    kv = engine["padding"][1]
    x = np.asarray(kv_read_tokens, dtype=float)
    return np.maximum(1, np.ceil(x / kv)) * kv if kv else x


def fit_engine(iterations: pd.DataFrame, phases, llm, base: CostModel, engine: dict) -> tuple[float, float]:
    """(cpu_overhead_s, per-KV-token seconds per layer) from the decode-only iterations of `phases`:
    (measured wall - simcluster's GPU time, packed attention) = a + b × cached keys read, by Theil-Sen
    (robust: host spikes that come and go with no change in the batch do not pull it)."""
    # scipy comes with the `test` extra; only this validation needs it.
    from scipy.stats import theilslopes

    d = decode_iterations(iterations, phases, engine)
    timer = StepTimer(llm, base, cuda_graphs=engine["cuda_graphs"], attention_packing=PACKING,
                      padding_tokens=engine["padding"])
    gpu_s = np.array([timer.time_s(n_decode=int(n), decode_ctx=int(kv + n))
                      for n, kv in zip(d["n_decode"], d["kv_read_tokens"])])
    b, a, _, _ = theilslopes(d["wall_s"].to_numpy() - gpu_s, cached_keys_read(d["kv_read_tokens"], engine))
    return float(a), float(b) / llm.n_layers


def engine_batching(async_scheduling: bool = False) -> Batching:
    return Batching(max_num_seqs=128, max_batched_tokens=2048, chunked_prefill=True, order="decode_first",
                    block_size=256, watermark=0.15, async_scheduling=async_scheduling)


def iteration_gpu_s(rows: pd.DataFrame, timer: StepTimer) -> np.ndarray:
    """simcluster's GPU time of each logged iteration's batch (packed attention: only the totals of
    queries and cached keys matter, so prefill chunks are priced as fresh prompts next to the
    decodes' cache reads)."""
    out = []
    for r in rows.itertuples():
        new = int(r.q_tokens) - int(r.n_decode)
        out.append(timer.time_s(n_prefill=int(r.n_prefill_chunks), prefill_new=new, prefill_ctx=new,
                                prefill_pairs=new * (new + 1) / 2, n_decode=int(r.n_decode),
                                decode_ctx=int(r.kv_read_tokens) + int(r.n_decode)))
    return np.array(out)


def fit_capture(iterations: pd.DataFrame, phases, llm, base: CostModel, engine: dict,
                per_kv_token_layer_s: float) -> tuple[float, int]:
    """(seconds a graph capture adds to its iteration, captures seen) from the probe phases: the
    iterations whose forward took the host over CAPTURE_LAUNCH_S to launch (a replay takes ~1 ms)
    ran eagerly, were captured and replayed before the launch returned (their GPU span ends within
    it); what that launch exceeds simcluster's time of their batch."""
    d = iterations[iterations["phase"].isin(list(phases)) & (iterations["launch_s"] > CAPTURE_LAUNCH_S)]
    timer = StepTimer(llm, engine_cost(base, per_kv_token_layer_s), cuda_graphs=True, attention_packing=PACKING,
                      padding_tokens=engine["padding"])
    return float(np.median(d["launch_s"].to_numpy() - iteration_gpu_s(d, timer))), len(d)


def warmup_trace(warm: pd.DataFrame) -> Trace:
    """The warm-up's requests at the times the engine got them."""
    return Trace("warm", warm["submit_s"].to_numpy(), warm["prompt_tokens"].to_numpy(),
                 warm["output_tokens"].to_numpy())


def with_warmup(trace: Trace, warm: pd.DataFrame, rate_start_s: float) -> Trace:
    """The warm-up's requests then the rate's, `rate_start_s` after the warm-up's start."""
    w = warmup_trace(warm)
    return Trace(f"warm+{trace.name}", np.concatenate([w.arrival_s, trace.arrival_s + rate_start_s]),
                 np.concatenate([w.prompt_tokens, trace.prompt_tokens]),
                 np.concatenate([w.output_tokens, trace.output_tokens]))


def engine_group(run: EngineRun, base: CostModel, cpu_overhead_s: float, per_kv_token_layer_s: float,
                 capture_s: float = 0.0) -> ReplicaGroup:
    """One replica computing as the run's engine did, with the fitted engine parameters."""
    engine = run.engine()
    return ReplicaGroup(load_gpu(run.gpu), engine_cost(base, per_kv_token_layer_s), 1, 1,
                        batching=engine_batching(engine["async"]),
                        cuda_graphs=engine["cuda_graphs"], cpu_overhead_s=cpu_overhead_s, attention_packing=PACKING,
                        graph_padding_tokens=engine["padding"], graph_capture_s=capture_s,
                        graph_io_sets=engine["io_sets"])


def simulate_engine(run: EngineRun, tag: str, base: CostModel, cpu_overhead_s: float,
                    per_kv_token_layer_s: float, capture_s: float = 0.0) -> pd.DataFrame:
    """simcluster's request rows for rate `tag` (after the run's warm-up, on the same replica, where it had one)."""
    trace = read_table(run.path(f"trace_{tag}.csv"))
    warm = run.warmup(tag)
    if warm is not None:
        trace = with_warmup(trace, *warm)
    group = engine_group(run, base, cpu_overhead_s, per_kv_token_layer_s, capture_s)
    rows = simulate_serving(run.llm(), trace, [group]).requests
    if warm is None:
        return rows
    n_warm, rate_start_s = len(warm[0]), warm[1]
    rows = rows[rows["request_id"] >= n_warm].copy()
    rows["request_id"] -= n_warm
    for col in ("arrival_s", "scheduled_s", "first_token_s", "finish_s"):
        rows[col] -= rate_start_s
    return rows.reset_index(drop=True)


def engine_records(run: EngineRun, tag: str) -> pd.DataFrame:
    rec = pd.read_csv(run.path(f"requests_{tag}.csv"))
    rec["arrival_s"] = rec["submit_s"]       # when the request actually reached the engine
    # One engine, random prompts (no shared prefix), KV never full: none cached, none preempted.
    return rec.assign(replica="engine", cached_tokens=0, preemptions=0)


def percentiles(records: pd.DataFrame) -> dict[str, float]:
    m = request_metrics(records)
    return {f"{k}_p{q}": float(np.nanpercentile(m[k], q)) for k in METRICS for q in (50, 90)}


def errors(run: EngineRun, base: CostModel, iterations: pd.DataFrame | None = None) -> dict[str, dict[str, float]]:
    """Relative error of every simulated p50/p90 against the engine's, per rate tag, with the engine
    parameters fitted on the run's probe phases only."""
    iterations = pd.read_csv(run.path("iterations.csv")) if iterations is None else iterations
    engine, llm = run.engine(), run.llm()
    a, b = fit_engine(iterations, probe_phases(iterations), llm, base, engine)
    capture_s = fit_capture(iterations, probe_phases(iterations), llm, base, engine, b)[0] \
        if engine["cuda_graphs"] else 0.0
    out = {}
    for tag in run.rates:
        sim = percentiles(simulate_engine(run, tag, base, a, b, capture_s))
        eng = percentiles(engine_records(run, tag))
        out[tag] = {k: (sim[k] - eng[k]) / eng[k] for k in eng}
    return out
