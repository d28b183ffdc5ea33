"""calibrate/engine_select and the rate choice of calibrate/engine: pure logic, no GPU or transformers."""

import math

from calibrate.engine import choose_rates
from calibrate.engine_select import (CONFIGS, GPU_BOUND_ITERATION_S, decode_iterations, engaged, mix_iterations,
                                     passes)


def _row(phase, start, n, n_decode, launch=0.0002, gpu=0.03):
    # IterationLog row: phase, start, prepare, step, update, n_requests, q, kv, n_decode, n_prefill, n_first,
    # thread_cpu, gc, gc_n, launch, gpu
    return (phase, start, 0.001, 0.03, 0.001, n, n, 100 * n, n_decode, n - n_decode, 0, 0.03, 0.0, 0, launch, gpu)


def test_decode_iterations_time_the_full_decode_batch_start_to_start():
    rows = [_row("p", 0.0, 8, 0)] + [_row("p", 0.1 + 0.034 * i, 8, 8) for i in range(20)]
    got = decode_iterations(rows, "p", 8)
    assert got["iterations"] == 19 and got["sequences"] == 8
    assert math.isclose(got["iteration_p50_s"], 0.034) and math.isclose(got["gpu_fraction"], 0.03 / 0.034)


def test_a_candidate_passes_only_engaged_gpu_bound_steady_and_complete():
    ok = {"error": "", "finished": 40, "requests": 40, "engaged": True,
          "b32": {"iterations": 40, "iteration_p50_s": 0.034, "p90_over_p50": 1.0}}
    assert passes(ok)
    assert not passes({**ok, "engaged": False})
    assert not passes({**ok, "finished": 39})
    assert not passes({**ok, "b32": {**ok["b32"], "iteration_p50_s": GPU_BOUND_ITERATION_S * 1.1}})
    assert not passes({**ok, "b32": {**ok["b32"], "p90_over_p50": 1.4}})


def test_engaged_reads_what_transformers_resolved():
    assert engaged("graphs_async", {"use_cuda_graph": [True, True], "use_async_batching": True})
    assert not engaged("graphs_async", {"use_cuda_graph": [False, False], "use_async_batching": False})
    assert not engaged("compile_async", {"use_async_batching": True, "varlen_compile_config": None})
    assert engaged("eager", {"use_cuda_graph": [False, False]})
    assert set(CONFIGS) >= {"eager", "graphs", "graphs_async"}


def test_mix_iterations_count_the_long_ones():
    starts = [0.034 * i for i in range(30)]
    starts[10:] = [s + 0.15 for s in starts[10:]]
    got = mix_iterations([("m", s) for s in starts], "m")
    assert got["long_iterations"] == 1 and math.isclose(got["iteration_max_s"], 0.184, rel_tol=1e-6)


def test_capacity_rates():
    stats = {"decode_tokens_per_s_b32": 2000.0}
    assert choose_rates("0.5,1.15,cap40", stats, 200.0, lambda m: None) == [0.5, 1.15, 4.0]
    assert choose_rates("auto", stats, 200.0, lambda m: None) == [2.5, 6.0]
