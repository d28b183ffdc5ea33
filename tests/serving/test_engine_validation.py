"""Validation against a real serving engine: transformers' continuous batching on one H100.

The measurements (profiles/measured/h100-sxm/engine_*, written by `python -m calibrate.engine`)
are a Llama-3.1-8B-shaped model serving two slices of the Azure LLM 2023 conversation trace at
0.5 and 1.15 requests/s. simcluster replays the exact same request files with that engine's policy:

- scheduler: FIFO = decode-first continuous batching with chunked prefill, 2048-token budget,
  at most 128 sequences, 256-token KV blocks, new prefills held back under 15 % free blocks;
- launch: eager (the engine turns CUDA graphs off for its masked SDPA path; provenance records it);
- attention: the engine's `paged|sdpa` path gathers the whole batch's KV from the pages, repeats it
  to every query head and runs one masked SDPA over the packed batch, so on top of the fused
  kernel's time it pays a cost per KV token read per iteration (`PackedAttentionKernels`);
- per-iteration host overhead: the engine runs eager Python (tens of ms per iteration, far above
  the GPU time of an 8B decode step), `cpu_overhead_s`.

The two fitted engine parameters (cpu_overhead_s, the per-KV-token cost) come from the engine's
own per-iteration log of the *other* rate's run: each rate is predicted out of sample.
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
OTHER = {"0p5": "1p15", "1p15": "0p5"}
METRICS = ("ttft_s", "tpot_s", "e2e_s")
TARGET = 0.10          # the target for p50 and p90 errors

# Where the model misses the 10% target: the measured error, a reason, and a regression guard
# (the measured error plus a small margin). The target test below still asserts 10% for these and
# is marked as an expected failure, so a fix shows up as XPASS. The engine's host time per
# iteration drifts upward during a run (the same batch costs ~65 ms early and ~100 ms late), so
# parameters fitted on one run carry that run's level to the other (benchmarks/README.md).
MISSES = {
    "0p5": {"ttft_s_p90": 0.17, "tpot_s_p50": 0.16, "e2e_s_p50": 0.17},
    "1p15": {"ttft_s_p50": 0.31, "ttft_s_p90": 0.45, "tpot_s_p50": 0.25, "tpot_s_p90": 0.25,
             "e2e_s_p50": 0.25, "e2e_s_p90": 0.25},
}
DRIFT = "engine host time per iteration drifts within a run; fitted on the other rate's run"


class PackedAttentionKernels:
    """Kernel times of another model plus the packed-SDPA cost per KV token read (per layer).

    The transformers `paged|sdpa` path copies every sequence's K and V out of the pages, repeats
    them from the KV heads to all query heads and runs a masked SDPA over the packed batch: its
    time grows with the KV tokens read in the iteration on top of what a fused kernel costs.
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


def fit_engine(iterations: pd.DataFrame, phase: str, llm, base: CostModel) -> tuple[float, float]:
    """(cpu_overhead_s, per-KV-token seconds per layer) from one run's decode-only iterations:
    (measured wall - simcluster's eager GPU time) = a + b × KV tokens read, by Theil-Sen.

    Robust on purpose: the engine's host time has spikes of +30-50 ms that come and go with no
    change in the batch; least squares let them pull the slope (2.1 vs 1.3 ms per 1000 KV
    tokens between the two runs), the median-of-slopes estimator gives 1.1 vs 1.3."""
    d = iterations[(iterations["phase"] == phase) & (iterations["n_prefill_chunks"] == 0)]
    timer = StepTimer(llm, base, cuda_graphs=False)
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
                         cuda_graphs=False, cpu_overhead_s=cpu_overhead_s)
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
    llm = load_llm("llama-3.1-8b")
    out = {}
    for tag in RATES:
        a, b = fit_engine(iterations, f"rate_{OTHER[tag]}", llm, base_cost)
        sim = percentiles(simulate_engine(tag, base_cost, a, b))
        eng = percentiles(engine_records(tag))
        out[tag] = {k: (sim[k] - eng[k]) / eng[k] for k in eng}
    return out


def test_measurements_are_complete_and_match_their_trace():
    prov = yaml.safe_load((MEASURED / "engine_provenance.yaml").read_text())
    assert prov["gpu_name"].startswith("NVIDIA H100")
    assert prov["engine_settings_resolved"]["use_cuda_graph"] == [False, False]
    assert prov["engine_settings_resolved"]["cache.block_size"] == 256
    for tag in RATES:
        rec, trace = engine_records(tag), pd.read_csv(MEASURED / f"engine_trace_{tag}.csv")
        assert (rec["status"] == "FINISHED").all()
        assert (rec["generated_tokens"] == rec["output_tokens"]).all()
        np.testing.assert_array_equal(rec["prompt_tokens"], trace["prompt_tokens"])
        # Submission followed the trace's clock to within 10 ms.
        assert np.abs(rec["submit_s"] - trace["arrival_s"]).max() < 0.01


def test_fitted_engine_parameters_agree_between_runs(iterations, base_cost):
    llm = load_llm("llama-3.1-8b")
    (a1, b1), (a2, b2) = (fit_engine(iterations, f"rate_{t}", llm, base_cost) for t in RATES)
    # The host overhead is tens of ms (eager Python); the later run sees it ~25 % higher (drift).
    assert 0.02 < a1 < 0.2 and 0.02 < a2 < 0.2 and abs(a1 - a2) / a1 < 0.3
    # Packed SDPA: a positive per-KV-token cost, the same within 25 % in both runs.
    assert b1 > 0 and b2 > 0 and 0.8 < b1 / b2 < 1.25


def _cases(strict_misses: bool):
    for tag in RATES:
        for metric in (f"{m}_p{q}" for m in METRICS for q in (50, 90)):
            missed = metric in MISSES[tag]
            marks = [pytest.mark.xfail(reason=DRIFT, strict=True)] if (missed and strict_misses) else []
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
