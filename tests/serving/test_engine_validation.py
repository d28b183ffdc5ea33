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

simcluster replays the exact same request files with that engine's policy
(simcluster/serving/validation.py says how); every rate is predicted out of sample, from engine
parameters fitted on the probe phases only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from simcluster.cost import CostModel, cost_model_for
from simcluster.serving.simulate import simulate_serving
from simcluster.serving.validation import (
    CAPTURE_LAUNCH_S,
    METRICS,
    PROBES,
    EngineRun,
    decode_iterations,
    engine_group,
    engine_records,
    errors,
    fit_capture,
    fit_engine,
    probe_phases,
    simulate_engine,
    warmup_trace,
)

TARGET = 0.10          # the target for p50 and p90 errors

SLOW_HOST = ("the host ran the engine's Python ~11 % slower per iteration during the 0.5/s run than in the "
             "probes (measured / modelled decode iteration: median 1.11, vs 1.00 at 1.15/s and 0.67-1.05 "
             "across probes) with the engine fresh, GC frozen and the thread on-CPU throughout")


GRAPH_CAPTURES = (
    "the engine captures a CUDA graph for each new padded batch shape while serving (43, 64 and 51 "
    "captures in the 0.5, 1.15 and 1.55/s runs; simcluster's shape model: 40, 69, 45); a capture is an "
    "eager forward plus recording, host-bound like the eager engine: it added a median 52 ms in the probes "
    "(the fitted cost) but 73 ms in the rate runs, and the tail TTFTs are prefills that met one; at 1.55/s "
    "a fresh engine met a new shape in 39 of its 46 prefill iterations")


# Run A, 2026-11-22. Measured: 0.5/s TTFT p90 -15.7 %, TPOT p50 -12.8 %, TPOT p90 -19.6 %,
# E2E p90 -19.4 % (benchmarks/README.md).
EAGER = EngineRun("eager", "engine_")
EAGER_MISSES = ({"0p5": {"ttft_s_p90": 0.18, "tpot_s_p50": 0.15, "tpot_s_p90": 0.22, "e2e_s_p90": 0.22}},
                SLOW_HOST)
# Run v2, 2026-11-22: CUDA graphs + async batching, GPU-bound (34 ms decode iterations, all GPU).
# Measured: 0.5/s TTFT p90 -20.8 %, 1.15/s TTFT p90 -18.8 %, 1.55/s TTFT p50 -22.1 %, p90 -42.8 %.
STEADY = EngineRun("steady", "engine_v2_")
STEADY_MISSES = ({"0p5": {"ttft_s_p90": 0.24}, "1p15": {"ttft_s_p90": 0.22},
                  "1p55": {"ttft_s_p50": 0.25, "ttft_s_p90": 0.46}}, GRAPH_CAPTURES)
RESIDUAL_CAPTURES = (
    "after its warm-up (94, 86 and 96 graphs captured on each rate's engine before the rate) the engine still "
    "captured 15, 29 and 11 graphs during the 0.5, 1.15 and 1.5/s rates (simcluster's replay of warm-up + rate: "
    "12, 33, 15); which prefills meet one turns on which of the two IO buffer sets their batch lands on, i.e. on a "
    "few ms of timing: at 0.5/s the engine's TTFT p90 (164 ms) falls between its 8th-longest TTFT (160 ms) and its "
    "7th (197 ms), and the simulated p90 moves from +20 % to +32 % as the capture cost moves from 59.6 to 62.6 ms; "
    "at 1.5/s (49 requests) the p90 is the 5th-longest TTFT")
# Run v3, 2026-11-22: as v2 (graphs_async), with a warm-up burst on each rate's engine before the rate.
# Measured: 0.5/s TTFT p90 +32.2 %, 1.5/s TTFT p90 -16.5 % (after the graph-gap cost of 2026-11-22 10:00).
PREWARMED = EngineRun("prewarmed", "engine_v3_")
PREWARMED_MISSES = ({"0p5": {"ttft_s_p90": 0.36}, "1p5": {"ttft_s_p90": 0.19}}, RESIDUAL_CAPTURES)
# Where the model misses the 10% target, per run: {rate: {metric: regression guard}} and the reason.
# The guard is the measured error plus a small margin; the target test still asserts 10% for these
# and marks them as strict expected failures, so a fix shows up as XPASS.
MISSES = {EAGER.name: EAGER_MISSES, STEADY.name: STEADY_MISSES, PREWARMED.name: PREWARMED_MISSES}
RUNS = [r for r in (EAGER, STEADY, PREWARMED) if r.present]


_ITERATIONS: dict[str, pd.DataFrame] = {}
_ERRORS: dict[str, dict] = {}


def run_iterations(run: EngineRun) -> pd.DataFrame:
    if run.name not in _ITERATIONS:
        _ITERATIONS[run.name] = pd.read_csv(run.path("iterations.csv"))
    return _ITERATIONS[run.name]


def run_errors(run: EngineRun, base: CostModel) -> dict[str, dict[str, float]]:
    if run.name not in _ERRORS:
        _ERRORS[run.name] = errors(run, base, run_iterations(run))
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
    llm, iterations, engine = EAGER.llm(), run_iterations(EAGER), EAGER.engine()
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
    llm = run.llm()
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
    from simcluster.serving import step
    made = []

    class Recorded(step.GraphCaptures):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(step, "GraphCaptures", Recorded)
    iterations, engine, llm = run_iterations(run), run.engine(), run.llm()
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
                missed = metric in MISSES[run.name][0].get(tag, {})
                marks = [pytest.mark.xfail(reason=MISSES[run.name][1], strict=True)] if (missed and strict_misses) else []
                yield pytest.param(run, tag, metric, marks=marks, id=f"{run.name}-{tag}-{metric}")


@pytest.mark.parametrize("run,tag,metric", list(_cases(strict_misses=True)))
def test_percentile_errors_within_target(base_cost, run, tag, metric):
    """The issue's target: every p50/p90 error within 10% (known misses are strict xfails)."""
    err = run_errors(run, base_cost)[tag][metric]
    assert abs(err) <= TARGET, f"{run.name} {tag} {metric}: error {err:+.1%} > {TARGET:.0%}"


@pytest.mark.parametrize("run,tag,metric", [pytest.param(r, t, m, id=f"{r.name}-{t}-{m}")
                                            for r in RUNS for t in MISSES[r.name][0] for m in MISSES[r.name][0][t]])
def test_known_misses_do_not_regress(base_cost, run, tag, metric):
    """A regression guard only, not the target: a known miss must not grow past its measured size."""
    err = run_errors(run, base_cost)[tag][metric]
    limit = MISSES[run.name][0][tag][metric]
    assert abs(err) <= limit, f"{run.name} {tag} {metric}: error {err:+.1%} grew past {limit:.0%}"
