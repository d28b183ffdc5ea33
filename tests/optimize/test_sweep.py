"""Sweep runner: order, cache, resume after an interruption, Ray backend against a local instance."""

import json
import os
import sys
import time

import numpy as np
import pytest

from simcluster.optimize.cache import CacheError, ResultCache, code_fingerprint, object_fingerprint, stable_hash
from simcluster.optimize.sweep import SweepError, run_sweep


class Interrupted(RuntimeError):
    pass


def square_logged(candidate: dict, context: dict) -> dict:
    """Record every call in a file (works across processes), fail on request, sleep to shuffle."""
    with open(context["log"], "a") as f:
        f.write(f"{candidate['x']}\n")
    if candidate["x"] == context.get("fail_at"):
        raise Interrupted(f"interrupted at {candidate['x']}")
    time.sleep(context.get("sleep_s", 0.0) * ((7 * candidate["x"]) % 5))
    return {"x": candidate["x"], "y": candidate["x"] ** 2}


def calls(path) -> list[int]:
    if not os.path.exists(path):
        return []
    return [int(line) for line in open(path).read().split()]


def test_results_in_candidate_order_not_completion_order(tmp_path):
    # Sleeps make later candidates finish first on a pool of 2.
    cands = [{"x": x} for x in range(8)]
    out = run_sweep(square_logged, cands, {"log": str(tmp_path / "log"), "sleep_s": 0.02}, workers=2)
    assert [r["x"] for r in out.results] == list(range(8))
    assert [r["y"] for r in out.results] == [x * x for x in range(8)]
    assert out.computed == 8 and out.cached == 0
    assert sorted(calls(tmp_path / "log")) == list(range(8))


def test_cache_hit_skips_every_call(tmp_path):
    cands = [{"x": x} for x in range(5)]
    ctx = {"log": str(tmp_path / "log")}
    first = run_sweep(square_logged, cands, ctx, workers=1, cache_dir=tmp_path / "cache", fingerprint="v1")
    again = run_sweep(square_logged, cands, ctx, workers=1, cache_dir=tmp_path / "cache", fingerprint="v1")
    assert again.results == first.results
    assert again.computed == 0 and again.cached == 5
    assert len(calls(ctx["log"])) == 5
    # Another fingerprint (other inputs) must not reuse those results.
    other = run_sweep(square_logged, cands, ctx, workers=1, cache_dir=tmp_path / "cache", fingerprint="v2")
    assert other.computed == 5 and len(calls(ctx["log"])) == 10


def test_interrupted_sweep_resumes_with_only_the_rest(tmp_path):
    n, k = 10, 4
    cands = [{"x": x} for x in range(n)]
    cache = tmp_path / "cache"
    log = str(tmp_path / "log")
    with pytest.raises(Interrupted):
        run_sweep(square_logged, cands, {"log": log, "fail_at": k}, workers=1, cache_dir=cache)
    assert calls(log) == list(range(k + 1))          # 0..k-1 done, k raised
    assert len(ResultCache(cache)) == k
    resumed = run_sweep(square_logged, cands, {"log": log}, workers=1, cache_dir=cache)
    assert calls(log)[k + 1:] == list(range(k, n))   # only the rest ran
    assert resumed.cached == k and resumed.computed == n - k
    assert [r["y"] for r in resumed.results] == [x * x for x in range(n)]


def test_interrupted_pool_sweep_loses_nothing_it_finished(tmp_path):
    n = 12
    cands = [{"x": x} for x in range(n)]
    cache = tmp_path / "cache"
    log = str(tmp_path / "log")
    with pytest.raises(Interrupted):
        run_sweep(square_logged, cands, {"log": log, "fail_at": 6, "sleep_s": 0.01}, workers=2, cache_dir=cache)
    stored = len(ResultCache(cache))
    first_calls = len(calls(log))
    assert 1 <= stored < n
    resumed = run_sweep(square_logged, cands, {"log": log}, workers=2, cache_dir=cache)
    assert resumed.cached == stored
    assert len(calls(log)) - first_calls == n - stored      # every stored result was reused
    assert [r["y"] for r in resumed.results] == [x * x for x in range(n)]


def test_cache_files_are_whole_json_and_keys_are_stable(tmp_path):
    cache = ResultCache(tmp_path)
    key = cache.key("f", {"a": 1, "b": [1.5, 2]}, "fp")
    assert key == stable_hash("f", {"b": (1.5, 2), "a": 1}, "fp")
    assert key != cache.key("f", {"a": 1, "b": [1.5, 2.0000001]}, "fp")
    cache.put(key, {"v": np.float64(2.5), "n": np.int64(3)}, "f", {"a": 1})
    assert cache.get(key) == {"v": 2.5, "n": 3}
    assert json.loads(cache.path(key).read_text())["key"] == key
    assert not list(tmp_path.glob("**/.tmp-*"))
    cache.path(key).write_text("{ torn")
    assert cache.get(key) is None                    # unreadable: recomputed, not trusted
    assert stable_hash(np.arange(3)) != stable_hash(np.arange(4))
    with pytest.raises(CacheError):
        stable_hash(object())


def test_fingerprints_follow_code_and_objects():
    import simcluster.optimize.pareto as pareto
    import simcluster.optimize.sweep as sweep
    assert code_fingerprint(pareto) == code_fingerprint(pareto)
    assert code_fingerprint(sweep) == code_fingerprint(pareto)        # same package folder
    assert object_fingerprint({"a": np.arange(3)}) == object_fingerprint({"a": np.arange(3)})
    assert object_fingerprint({"a": np.arange(3)}) != object_fingerprint({"a": np.arange(4)})


def test_bad_backend_and_workers_are_one_line_errors():
    with pytest.raises(SweepError, match="backend: 'dask'"):
        run_sweep(square_logged, [], backend="dask")
    with pytest.raises(SweepError, match="workers: 0"):
        run_sweep(square_logged, [], workers=0)


def test_ray_backend_matches_local(tmp_path):
    ray = pytest.importorskip("ray")
    # Ray workers are fresh interpreters that cannot import this test module by name.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cands = [{"x": x} for x in range(6)]
        ctx = {"log": str(tmp_path / "log")}
        remote = run_sweep(square_logged, cands, ctx, backend="ray", cache_dir=tmp_path / "cache")
        local = run_sweep(square_logged, cands, ctx, workers=1)
        assert remote.results == local.results
        assert remote.computed == 6
        again = run_sweep(square_logged, cands, ctx, backend="ray", cache_dir=tmp_path / "cache")
        assert again.cached == 6 and again.computed == 0
    finally:
        ray.shutdown()
