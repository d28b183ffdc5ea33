"""Replica policies: paged KV, preemption (recompute, swap), chunked prefill, orders, max ITL, PP."""

import numpy as np
import pandas as pd
import pytest

from simcluster.serving.batching import Batching, BatchingError
from simcluster.serving.scheduler import KvCapacityError
from simcluster.serving.simulate import simulate_serving
from simcluster.serving.step import StepTimer
from simcluster.workload import Trace

TIGHT = dict(gpu_memory_utilization=0.22, max_batched_tokens=2048)   # ~20k KV tokens on an H100


def burst(n, prompt, output):
    return Trace("burst", np.zeros(n), np.full(n, prompt), np.full(n, output))


def run(llm, group, trace, **kw):
    return simulate_serving(llm, trace, [group(**kw)])


@pytest.fixture(scope="module")
def recompute(llm, group):
    return run(llm, group, burst(60, 600, 400), **TIGHT)


@pytest.fixture(scope="module")
def swap(llm, group):
    return run(llm, group, burst(60, 600, 400), preemption="swap", **TIGHT)


def test_short_kv_preempts_and_every_request_still_finishes(recompute):
    res = recompute
    assert res.unfinished == 0 and len(res.requests) == 60
    assert res.requests["preemptions"].sum() > 0
    it = res.iterations
    assert (it["kv_used_tokens"] <= it["kv_capacity_tokens"]).all()
    assert it["preemptions"].sum() == res.requests["preemptions"].sum()


def test_recompute_prefills_again_and_swap_does_not(recompute, swap):
    prompts = 60 * 600
    assert recompute.iterations["prefill_tokens"].sum() > prompts        # lost KV is computed again
    assert swap.iterations["prefill_tokens"].sum() == prompts            # swapped KV comes back intact
    assert swap.requests["preemptions"].sum() > 0
    assert swap.iterations["swap_s"].sum() > 0 and recompute.iterations["swap_s"].sum() == 0


def test_swap_time_is_blocks_over_the_host_link(llm, group, swap):
    """Every swapped block crosses the host link twice (out, in): total swap time is an even number of
    block copies, each block_size × KV bytes per token per GPU / host bandwidth."""
    from simcluster.llm.ops import kv_bytes_per_token
    from simcluster.hardware.node import default_node_for
    per_block_s = 16 * kv_bytes_per_token(llm) / default_node_for("h100-sxm").host_to_device_bandwidth_bytes_per_s
    copies = swap.iterations["swap_s"].sum() / per_block_s
    assert copies == pytest.approx(round(copies), abs=1e-6) and round(copies) % 2 == 0
    slow = run(llm, group, burst(60, 600, 400), preemption="swap", host_to_device_bandwidth_bytes_per_s=1e9, **TIGHT)
    assert slow.requests["finish_s"].max() > swap.requests["finish_s"].max()


def test_swap_space_full_falls_back_to_recompute(llm, group):
    res = run(llm, group, burst(60, 600, 400), preemption="swap", swap_space_bytes=0, **TIGHT)
    assert res.iterations["swap_s"].sum() == 0
    assert res.iterations["prefill_tokens"].sum() > 60 * 600


def test_chunked_prefill_bounds_the_tokens_of_every_iteration(llm, group, poisson_trace):
    trace = poisson_trace(200, 20.0, 3000, 50)
    res = run(llm, group, trace, max_batched_tokens=1024)
    it = res.iterations
    assert (it["prefill_tokens"] + it["n_decode"]).max() == 1024
    assert res.unfinished == 0
    whole = run(llm, group, trace, max_batched_tokens=1024, chunked_prefill=False).iterations
    assert whole["prefill_tokens"].max() == 3000        # a prompt over the budget runs whole, alone


def test_prefill_first_never_mixes_and_decode_first_keeps_decodes_running(llm, group, poisson_trace):
    trace = poisson_trace(150, 15.0, 800, 100)
    pf = run(llm, group, trace, order="prefill_first").iterations
    assert ((pf["n_prefill"] == 0) | (pf["n_decode"] == 0)).all()
    df = run(llm, group, trace, order="decode_first").iterations
    assert ((df["n_prefill"] > 0) & (df["n_decode"] > 0)).any()


def test_max_itl_equals_the_worst_gap_read_off_the_iteration_log(llm, group, poisson_trace):
    trace = poisson_trace(120, 12.0, np.random.default_rng(1).integers(100, 3000, 120),
                          np.random.default_rng(2).integers(2, 200, 120))
    res = run(llm, group, trace, count=1, max_batched_tokens=512)
    it = res.iterations
    ends = np.sort((it["start_s"] + it["duration_s"])[it["n_decode"] > 0].to_numpy())
    for row in res.requests.itertuples():
        times = ends[(ends > row.first_token_s + 1e-12) & (ends <= row.finish_s + 1e-12)]
        assert len(times) == row.output_tokens - 1          # one token per decode iteration
        gaps = np.diff(np.concatenate([[row.first_token_s], times]))
        assert row.max_itl_s == pytest.approx(gaps.max(), rel=1e-9)


def test_max_itl_includes_preemption_stalls(recompute):
    r = recompute.requests
    hit = r[r["preemptions"] > 0]
    calm = r[r["preemptions"] == 0]
    assert hit["max_itl_s"].median() > 5 * calm["max_itl_s"].median()


def test_paged_blocks_round_up_kv_use(llm, group):
    trace = burst(1, 17, 2)   # 17 prompt tokens: 2 blocks of 16, or 1 of 32
    small = run(llm, group, trace, block_size=16).iterations
    large = run(llm, group, trace, block_size=32).iterations
    assert small["kv_used_tokens"].iloc[0] == 32 and large["kv_used_tokens"].iloc[0] == 32
    assert run(llm, group, burst(1, 15, 2), block_size=16).iterations["kv_used_tokens"].iloc[0] == 16


def test_watermark_and_max_num_seqs_limit_admission(llm, group):
    trace = burst(40, 200, 50)
    it = run(llm, group, trace, max_num_seqs=8).iterations
    assert it["n_running"].max() == 8
    held = run(llm, group, burst(40, 2000, 50), watermark=0.5, **TIGHT).iterations
    cap = held["kv_capacity_tokens"].iloc[0]
    # Admission keeps half the blocks free; only decode growth may eat into them.
    assert (held["kv_used_tokens"][held["n_prefill"] > 0] <= 0.5 * cap + 2048 + 16).all()


def test_a_request_larger_than_the_cache_is_a_clear_error(llm, group):
    with pytest.raises(KvCapacityError, match="request 0 needs"):
        run(llm, group, burst(1, 30000, 2), **TIGHT)


def test_bad_policy_names_are_rejected():
    with pytest.raises(BatchingError, match="batching.order"):
        Batching(order="fifo")
    with pytest.raises(BatchingError, match="batching.preemption"):
        Batching(preemption="drop")


def test_pipeline_overlaps_batches_bounded_by_the_slowest_stage(llm, group, roofline):
    """N identical one-token requests, 2 stages, one sequence per virtual engine: the makespan of a
    two-stage FIFO tandem is t0 + t1 + (N - 1) max(t0, t1), not the serial N (t0 + t1)."""
    n = 40
    res = run(llm, group, burst(n, 1000, 1), pp=2, max_num_seqs=1, chunked_prefill=False)
    times, _, _ = StepTimer(llm, roofline, pp=2).step(1, 1000, 1000, 1000 * 1001 / 2, 0, 0)
    t0, t1 = times
    assert res.requests["finish_s"].max() == pytest.approx(t0 + t1 + (n - 1) * max(t0, t1), rel=1e-9)
    assert res.iterations["engine"].nunique() == 2


def test_same_inputs_give_identical_frames(llm, group, poisson_trace):
    trace = poisson_trace(150, 30.0, 700, 120, seed=3)
    a = run(llm, group, trace, count=3, **TIGHT)
    b = run(llm, group, trace, count=3, **TIGHT)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.iterations, b.iterations)
    assert a.summary() == b.summary() or str(a.summary()) == str(b.summary())


def test_one_event_per_iteration_however_many_tokens(llm, group, monkeypatch):
    """SimPy events = iterations + at most two per request (its arrival, waking an idle replica):
    nothing is scheduled per token, so ten times the output tokens add iterations, not events per
    iteration or per token."""
    import simpy
    count = {"events": 0}
    step = simpy.Environment.step

    def counting(self):
        count["events"] += 1
        return step(self)
    monkeypatch.setattr(simpy.Environment, "step", counting)
    per_iteration = []
    for output in (50, 500):
        count["events"] = 0
        trace = Trace("t", np.linspace(0, 5, 100), np.full(100, 300), np.full(100, output))
        res = run(llm, group, trace)
        iterations = len(res.iterations)
        assert count["events"] <= iterations + 2 * 100 + 2
        assert iterations < 100 * output / 4           # batches, not tokens, drive the event count
        per_iteration.append(iterations)
    assert per_iteration[1] > per_iteration[0]


def test_async_scheduling_delays_admission_by_one_busy_iteration(llm, group):
    """With async scheduling a request arriving while the engine is busy joins the batch after
    next (that batch was chosen when the current one started); on an idle engine, at once."""
    # One long request keeps the engine decoding; a second arrives mid-run.
    trace = Trace("t", np.array([0.0, 1.0]), np.array([512, 512]), np.array([400, 8]))
    sync = simulate_serving(llm, trace, [group()]).requests.sort_values("arrival_s")
    lag = simulate_serving(llm, trace, [group(async_scheduling=True)]).requests.sort_values("arrival_s")
    first = (lag["first_token_s"] - lag["arrival_s"]).to_numpy(), (sync["first_token_s"] - sync["arrival_s"]).to_numpy()
    assert first[0][0] == pytest.approx(first[1][0])      # idle engine: no lag
    # The second waits for the iteration that was chosen before it arrived: up to one decode step more.
    decode_step_s = StepTimer(llm, group().cost).time_s(n_decode=1, decode_ctx=1000)
    extra = first[0][1] - first[1][1]
    assert 0 < extra <= decode_step_s * 1.05
