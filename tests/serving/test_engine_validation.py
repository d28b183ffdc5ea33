"""Validation against a real serving engine: transformers' continuous batching on one H100.

Three runs of `python -m calibrate.engine` (profiles/measured/h100-sxm/), each a Llama-3.1-8B-shaped
model serving slices of the Azure LLM 2023 conversation trace, each rate on a fresh engine with the
Python heap frozen (as vLLM does), with fixed-concurrency probes before (fit_*) and after (late_*):

- `eager` (engine_*): the engine's default for `paged|sdpa`: CUDA graphs off, no async batching.
  It is host-bound (~100 ms of Python per iteration), so its speed is the host CPU's and wanders
  with it; the misses below are that.
- `steady` (engine_v2_*): the configuration `--select` picked (calibrate/engine_select.py) to take
  the host out of the iteration (CUDA graphs and/or async batching); see its provenance. It
  captures a CUDA graph for each new padded batch shape while serving.
- `prewarmed` (engine_v3_*): the same engine (`--config graphs_async`), and on each rate's fresh
  engine a warm-up burst (`--prewarm`, phase warm_<rate>) of every prompt length in steps of the
  query padding, served just before the rate, so most graphs the rate needs are captured before it
  is measured, as vLLM captures its graphs at start-up.

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

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import theilslopes

from simcluster.cost import CostModel, cost_model_for
from simcluster.hardware.gpu import load_gpu
from simcluster.llm.spec import load_llm
from simcluster.serving.batching import Batching
from simcluster.serving.metrics import request_metrics
from simcluster.serving.simulate import ReplicaGroup, simulate_serving
from simcluster.serving.step import StepTimer
from simcluster.workload import Trace
from simcluster.workload.readers import read_table

MEASURED = Path(__file__).resolve().parents[2] / "profiles" / "measured" / "h100-sxm"
PROBES = ("fit_", "late_")   # phases the engine parameters are fitted on; rate_* phases are checked
METRICS = ("ttft_s", "tpot_s", "e2e_s")
TARGET = 0.10          # the target for p50 and p90 errors
PACKING = "packed"
CAPTURE_LAUNCH_S = 0.02   # a forward whose launch took longer was run eagerly and captured

SLOW_HOST = ("the host ran the engine's Python ~11 % slower per iteration during the 0.5/s run than in the "
             "probes (measured / modelled decode iteration: median 1.11, vs 1.00 at 1.15/s and 0.67-1.05 "
             "across probes) with the engine fresh, GC frozen and the thread on-CPU throughout")


GRAPH_CAPTURES = (
    "the engine captures a CUDA graph for each new padded batch shape while serving (43, 64 and 51 "
    "captures in the 0.5, 1.15 and 1.55/s runs; simcluster's shape model: 40, 69, 45); a capture is an "
    "eager forward plus recording, host-bound like the eager engine: it added a median 52 ms in the probes "
    "(the fitted cost) but 73 ms in the rate runs, and the tail TTFTs are prefills that met one; at 1.55/s "
    "a fresh engine met a new shape in 39 of its 46 prefill iterations")


@dataclass(frozen=True)
class EngineRun:
    """One engine run's files and what the model misses on it.

    misses: where the model misses the 10% target, a regression guard each (the measured error
    plus a small margin); the target test still asserts 10% for these and marks them as strict
    expected failures with `reason`, so a fix shows up as XPASS.
    """

    name: str
    prefix: str
    misses: dict = field(default_factory=dict)
    reason: str = ""

    def path(self, what: str) -> Path:
        return MEASURED / f"{self.prefix}{what}"

    @property
    def present(self) -> bool:
        return self.path("provenance.yaml").exists()

    @property
    def rates(self) -> tuple[str, ...]:
        """Rate tags served, lowest rate first."""
        tags = [f.name[len(self.prefix) + len("requests_"):-4] for f in MEASURED.glob(f"{self.prefix}requests_*.csv")]
        tags = [t for t in tags if t != "fit" and self.path(f"trace_{t}.csv").exists()]
        return tuple(sorted(tags, key=lambda t: float(t.replace("p", "."))))

    def provenance(self) -> dict:
        return yaml.safe_load(self.path("provenance.yaml").read_text())

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


# Run A, 2026-11-22. Measured: 0.5/s TTFT p90 -15.7 %, TPOT p50 -12.8 %, TPOT p90 -19.6 %,
# E2E p90 -19.4 % (benchmarks/README.md).
EAGER = EngineRun("eager", "engine_",
                  {"0p5": {"ttft_s_p90": 0.18, "tpot_s_p50": 0.15, "tpot_s_p90": 0.22, "e2e_s_p90": 0.22}},
                  SLOW_HOST)
# Run v2, 2026-11-22: CUDA graphs + async batching, GPU-bound (34 ms decode iterations, all GPU).
# Measured: 0.5/s TTFT p90 -20.8 %, 1.15/s TTFT p90 -18.8 %, 1.55/s TTFT p50 -22.1 %, p90 -42.8 %.
STEADY = EngineRun("steady", "engine_v2_",
                   {"0p5": {"ttft_s_p90": 0.24}, "1p15": {"ttft_s_p90": 0.22},
                    "1p55": {"ttft_s_p50": 0.25, "ttft_s_p90": 0.46}},
                   GRAPH_CAPTURES)
RESIDUAL_CAPTURES = (
    "after its warm-up (94, 86 and 96 graphs captured on each rate's engine before the rate) the engine still "
    "captured 15, 29 and 11 graphs during the 0.5, 1.15 and 1.5/s rates (simcluster's replay of warm-up + rate: "
    "12, 33, 15); which prefills meet one turns on which of the two IO buffer sets their batch lands on, i.e. on a "
    "few ms of timing: at 0.5/s the engine's TTFT p90 (164 ms) falls between its 8th-longest TTFT (160 ms) and its "
    "7th (197 ms), and the simulated p90 moves from +20 % to +32 % as the capture cost moves from 59.6 to 62.6 ms; "
    "at 1.5/s (49 requests) the p90 is the 5th-longest TTFT")
# Run v3, 2026-11-22: as v2 (graphs_async), with a warm-up burst on each rate's engine before the rate.
# Measured: 0.5/s TTFT p90 +32.3 %, 1.5/s TTFT p90 -16.3 %.
PREWARMED = EngineRun("prewarmed", "engine_v3_", {"0p5": {"ttft_s_p90": 0.36}, "1p5": {"ttft_s_p90": 0.19}},
                      RESIDUAL_CAPTURES)
RUNS = [r for r in (EAGER, STEADY, PREWARMED) if r.present]


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
    return ReplicaGroup(load_gpu("h100-sxm"), engine_cost(base, per_kv_token_layer_s), 1, 1,
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
    rows = simulate_serving(load_llm("llama-3.1-8b"), trace, [group]).requests
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


_ITERATIONS: dict[str, pd.DataFrame] = {}
_ERRORS: dict[str, dict] = {}


def run_iterations(run: EngineRun) -> pd.DataFrame:
    if run.name not in _ITERATIONS:
        _ITERATIONS[run.name] = pd.read_csv(run.path("iterations.csv"))
    return _ITERATIONS[run.name]


def run_errors(run: EngineRun, base: CostModel) -> dict[str, dict[str, float]]:
    """Relative error of every simulated p50/p90 against the engine's, per rate tag."""
    if run.name not in _ERRORS:
        iterations, engine, llm = run_iterations(run), run.engine(), load_llm("llama-3.1-8b")
        a, b = fit_engine(iterations, probe_phases(iterations), llm, base, engine)
        capture_s = fit_capture(iterations, probe_phases(iterations), llm, base, engine, b)[0] \
            if engine["cuda_graphs"] else 0.0
        out = {}
        for tag in run.rates:
            sim = percentiles(simulate_engine(run, tag, base, a, b, capture_s))
            eng = percentiles(engine_records(run, tag))
            out[tag] = {k: (sim[k] - eng[k]) / eng[k] for k in eng}
        _ERRORS[run.name] = out
    return _ERRORS[run.name]


@pytest.fixture(scope="module")
def base_cost() -> CostModel:
    return cost_model_for("h100-sxm")


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
def test_measurements_are_complete_and_match_their_trace(run):
    prov = run.provenance()
    iterations = run_iterations(run)
    assert prov["gpu_name"].startswith("NVIDIA H100")
    assert prov["engine_settings_resolved"]["cache.block_size"] == 256
    assert prov["python_gc"] == "freeze" and prov["torch_threads"] == 1
    # Probes before and after the rates, on engines of their own.
    assert {p.split("_", 1)[1] for p in probe_phases(iterations, ("fit_",))} == \
        {p.split("_", 1)[1] for p in probe_phases(iterations, ("late_",))}
    assert len(run.rates) >= 2
    for tag in run.rates:
        rec, trace = engine_records(run, tag), pd.read_csv(run.path(f"trace_{tag}.csv"))
        assert (rec["status"] == "FINISHED").all()
        assert (rec["generated_tokens"] == rec["output_tokens"]).all()
        np.testing.assert_array_equal(rec["prompt_tokens"], trace["prompt_tokens"])
        # Submission followed the trace's clock to within 10 ms.
        assert np.abs(rec["submit_s"] - trace["arrival_s"]).max() < 0.01


@pytest.mark.skipif(not EAGER.present, reason="run A files absent")
def test_eager_engine_is_host_bound_on_cpu_without_gc_pauses():
    """What the eager engine's time per iteration is made of, in the rate runs: the generation
    thread is on the CPU for the whole iteration (not waiting for the GIL, the scheduler or the
    GPU), almost all of it launching the forward's kernels, and garbage collection takes no
    measurable share (the heap is frozen). So the host time varies with the CPU's own speed, not
    the engine's state."""
    assert EAGER.provenance()["engine_settings_resolved"]["use_cuda_graph"] == [False, False]
    d = decode_iterations(run_iterations(EAGER), [f"rate_{t}" for t in EAGER.rates], EAGER.engine())
    assert (d["thread_cpu_s"].sum() / d["wall_s"].sum()) > 0.97
    assert (d["launch_s"].sum() / d["wall_s"].sum()) > 0.9
    assert d["gc_s"].sum() < 0.001 * d["wall_s"].sum()


@pytest.mark.skipif(not EAGER.present, reason="run A files absent")
def test_eager_probe_fits_before_and_after_the_rates_agree(base_cost):
    """The host level fitted on the probes before the rates and on those after them, on fresh engines."""
    llm, iterations, engine = load_llm("llama-3.1-8b"), run_iterations(EAGER), EAGER.engine()
    (a1, _), (a2, _) = (fit_engine(iterations, probe_phases(iterations, (p,)), llm, base_cost, engine) for p in PROBES)
    assert 0.05 < a1 < 0.2 and 0.05 < a2 < 0.2 and abs(a1 - a2) / a2 < 0.1
    a, b = fit_engine(iterations, probe_phases(iterations), llm, base_cost, engine)
    assert 0.05 < a < 0.2 and b > 0


GRAPH_RUNS = [r for r in (STEADY, PREWARMED) if r.present]


@pytest.mark.parametrize("run", GRAPH_RUNS, ids=[r.name for r in GRAPH_RUNS])
def test_graph_engine_is_gpu_bound_and_its_probe_fits_agree(base_cost, run):
    """The v2 and v3 engines replay CUDA graphs: in the rate runs a decode iteration launches in well
    under a millisecond and its wall time is its GPU time; the host level and the per-KV-token cost
    fitted on the probes before the rates and on those after them agree to within 1 %."""
    engine = run.engine()
    assert engine["cuda_graphs"] and engine["async"] and engine["padding"] == (64, 16384)
    iterations = run_iterations(run)
    d = decode_iterations(iterations, [f"rate_{t}" for t in run.rates], engine)
    d = d[d["launch_s"] < CAPTURE_LAUNCH_S]
    assert d["launch_s"].median() < 0.001
    assert (d["gpu_s"] / d["wall_s"]).median() > 0.97
    llm = load_llm("llama-3.1-8b")
    (a1, b1), (a2, b2) = (fit_engine(iterations, probe_phases(iterations, (p,)), llm, base_cost, engine) for p in PROBES)
    assert abs(a1 - a2) < 0.001 and abs(b1 - b2) / b2 < 0.01


def captures_measured(run: EngineRun, phase: str) -> int:
    """Iterations of `phase` whose forward was captured (its launch took over CAPTURE_LAUNCH_S)."""
    iterations = run_iterations(run)
    return int((iterations[iterations["phase"] == phase]["launch_s"] > CAPTURE_LAUNCH_S).sum())


@pytest.mark.parametrize("run", GRAPH_RUNS, ids=[r.name for r in GRAPH_RUNS])
def test_simulated_graph_captures_match_the_engine(base_cost, monkeypatch, run):
    """simcluster's capture model (padded query and KV tokens, longest sequence as a power of two,
    one graph set per async IO pair) captures about as many graphs as the engine did per rate, and
    per warm-up where the run had them (the warm-up alone, replayed on its own, is the same
    deterministic replay as the warm-up part of warm-up + rate)."""
    import simcluster.serving.step as step
    made = []

    class Recorded(step.GraphCaptures):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(step, "GraphCaptures", Recorded)
    iterations, engine, llm = run_iterations(run), run.engine(), load_llm("llama-3.1-8b")
    a, b = fit_engine(iterations, probe_phases(iterations), llm, base_cost, engine)
    capture_s, _ = fit_capture(iterations, probe_phases(iterations), llm, base_cost, engine, b)
    for tag in run.rates:
        simulate_engine(run, tag, base_cost, a, b, capture_s)
        simulated, warm = made[-1].captures, 0
        if run.warmup(tag) is not None:
            simulate_serving(llm, warmup_trace(run.warmup(tag)[0]), [engine_group(run, base_cost, a, b, capture_s)])
            warm = made[-1].captures
            measured_warm = captures_measured(run, f"warm_{tag}")
            assert abs(warm - measured_warm) <= 0.15 * measured_warm, (tag, "warm-up", warm, measured_warm)
        measured = captures_measured(run, f"rate_{tag}")
        assert abs(simulated - warm - measured) <= max(0.15 * measured, 5), (tag, simulated - warm, measured)


def _cases(strict_misses: bool):
    for run in RUNS:
        for tag in run.rates:
            for metric in (f"{m}_p{q}" for m in METRICS for q in (50, 90)):
                missed = metric in run.misses.get(tag, {})
                marks = [pytest.mark.xfail(reason=run.reason, strict=True)] if (missed and strict_misses) else []
                yield pytest.param(run, tag, metric, marks=marks, id=f"{run.name}-{tag}-{metric}")


@pytest.mark.parametrize("run,tag,metric", list(_cases(strict_misses=True)))
def test_percentile_errors_within_target(base_cost, run, tag, metric):
    """The issue's target: every p50/p90 error within 10% (known misses are strict xfails)."""
    err = run_errors(run, base_cost)[tag][metric]
    assert abs(err) <= TARGET, f"{run.name} {tag} {metric}: error {err:+.1%} > {TARGET:.0%}"


@pytest.mark.parametrize("run,tag,metric", [pytest.param(r, t, m, id=f"{r.name}-{t}-{m}")
                                            for r in RUNS for t in r.misses for m in r.misses[t]])
def test_known_misses_do_not_regress(base_cost, run, tag, metric):
    """A regression guard only, not the target: a known miss must not grow past its measured size."""
    err = run_errors(run, base_cost)[tag][metric]
    limit = run.misses[tag][metric]
    assert abs(err) <= limit, f"{run.name} {tag} {metric}: error {err:+.1%} grew past {limit:.0%}"
