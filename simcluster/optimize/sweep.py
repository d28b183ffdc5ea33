"""Sweeps: map a pure function over candidate dicts on a local process pool or a Ray cluster.

`run_sweep(fn, candidates, context)` calls `fn(candidate, context)` once per candidate and returns
the results in candidate order, whatever order they finished in (DESIGN principle 5). With a
cache folder every result is written to disk as soon as it arrives (cache.py), so a sweep that was
interrupted — Ctrl-C, a crash, a lost Ray node — resumes by computing only what is missing.

`fn` must be a module-level function (both backends pickle it by reference) returning a JSON-ready
value; `context` carries the large shared inputs (LLM spec, trace) and is shipped once per task
(local pool) or put in the object store once (Ray). Ray is imported only when asked for.

>>> from simcluster.optimize.sweep import run_sweep
>>> run_sweep(pow, [2, 3], 2, workers=1).results   # fn(candidate, context) = candidate ** 2
[4, 9]
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

from simcluster.optimize.cache import ResultCache

BACKENDS = ("local", "ray")


class SweepError(ValueError):
    """A sweep that cannot start (unknown backend, Ray missing, bad worker count); one line."""


@dataclass
class SweepOutcome:
    """Results in candidate order; how many were computed now and how many came from the cache."""

    results: list
    computed: int = 0
    cached: int = 0
    wall_s: float = 0.0
    backend: str = "local"
    workers: int = 1
    keys: list[str] = field(default_factory=list)
    fresh: list[bool] = field(default_factory=list)   # per candidate: computed by this run


@dataclass(frozen=True)
class SweepOptions:
    """How a search runs its sweeps: the arguments of run_sweep that do not depend on the work."""

    backend: str = "local"
    workers: int | None = None
    address: str | None = None
    cache_dir: str | None = None
    progress: bool = False

    def run(self, fn: Callable, candidates: list, context=None, fingerprint: str = "",
            description: str = "sweep") -> SweepOutcome:
        return run_sweep(fn, candidates, context, backend=self.backend, workers=self.workers,
                         address=self.address, cache_dir=self.cache_dir, fingerprint=fingerprint,
                         progress=self.progress, description=description)

    @property
    def parallelism(self) -> int:
        return self.workers or default_workers()

    @contextmanager
    def session(self):
        """Hold one Ray connection across every sweep inside (starting Ray takes seconds); a no-op
        for the local backend. Sweeps outside a session connect and disconnect each time."""
        if self.backend != "ray":
            yield self
            return
        ray = _import_ray()
        owned = not ray.is_initialized()
        if owned:
            _ray_init(ray, self.address, self.parallelism)
        try:
            yield self
        finally:
            if owned:
                ray.shutdown()


def function_name(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def default_workers() -> int:
    """Worker processes: the CPUs this process may run on (cgroup/affinity aware where possible)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def run_sweep(fn: Callable, candidates: list, context=None, *, backend: str = "local",
              workers: int | None = None, address: str | None = None, cache_dir: str | None = None,
              fingerprint: str = "", progress: bool = False, description: str = "sweep") -> SweepOutcome:
    """Compute fn(candidate, context) for every candidate; results in candidate order.

    backend: 'local' (a process pool of `workers` processes, default one per CPU; workers=1 runs
    in this process) or 'ray' (`address` of a running cluster, or None for a local instance).
    cache_dir: folder of cached results keyed by (function name, candidate, fingerprint); the
    fingerprint must change whenever `context` does (see cache.stable_hash).
    progress: show a rich progress bar on stderr.
    An exception in fn stops the sweep (pending work is cancelled) and propagates; every result
    finished before it is already on disk.
    """
    if backend not in BACKENDS:
        raise SweepError(f"backend: {backend!r}; expected one of {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise SweepError(f"workers: {workers}; expected a positive number of processes")
    started = time.perf_counter()
    workers = workers or default_workers()
    cache = ResultCache(cache_dir) if cache_dir else None
    name = function_name(fn)
    results: list = [None] * len(candidates)
    keys = [cache.key(name, c, fingerprint) if cache is not None else "" for c in candidates]
    todo = []
    for i, cand in enumerate(candidates):
        hit = cache.get(keys[i]) if cache is not None else None
        if hit is None:
            todo.append(i)
        else:
            results[i] = hit
    outcome = SweepOutcome(results, computed=0, cached=len(candidates) - len(todo), backend=backend,
                           workers=workers, keys=keys, fresh=[False] * len(candidates))

    with _Bar(progress, description, len(candidates), outcome.cached) as bar:
        def on_result(i: int, value) -> None:
            if cache is not None:
                cache.put(keys[i], value, name, candidates[i])
            results[i] = value
            outcome.fresh[i] = True
            outcome.computed += 1
            bar.advance()

        if todo:
            if backend == "ray":
                _run_ray(fn, candidates, todo, context, workers, address, on_result)
            elif workers == 1 or len(todo) == 1:
                for i in todo:
                    on_result(i, fn(candidates[i], context))
            else:
                _run_pool(fn, candidates, todo, context, workers, on_result)
    outcome.wall_s = time.perf_counter() - started
    return outcome


def _run_pool(fn, candidates, todo, context, workers, on_result) -> None:
    """A process pool with at most 2 × workers tasks queued, so an interruption wastes little."""
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)))
    pending: dict = {}
    queue = iter(todo)
    try:
        for i in queue:
            pending[pool.submit(fn, candidates[i], context)] = i
            if len(pending) >= 2 * workers:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            # Completion order is not candidate order; record in index order within the batch so a
            # cache written by an interrupted run is the same whichever finished first.
            error = None
            for fut in sorted(done, key=pending.get):
                i = pending.pop(fut)
                if fut.exception() is not None:
                    error = error or fut.exception()
                else:
                    on_result(i, fut.result())
            if error is not None:
                raise error
            for i in queue:
                pending[pool.submit(fn, candidates[i], context)] = i
                if len(pending) >= 2 * workers:
                    break
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _call(fn, candidate, context):
    return fn(candidate, context)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise SweepError("backend: 'ray' needs the ray package; install it with "
                         "pip install 'simcluster[cluster]'") from None
    return ray


def _ray_init(ray, address: str | None, workers: int) -> None:
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)


def _run_ray(fn, candidates, todo, context, workers, address, on_result) -> None:
    ray = _import_ray()
    owned = not ray.is_initialized()
    if owned:
        _ray_init(ray, address, workers)
    pending: list = []
    try:
        task = ray.remote(_call)
        shared = ray.put(context)
        refs = {task.remote(fn, candidates[i], shared): i for i in todo}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                on_result(refs[ref], ray.get(ref))
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        if owned:
            ray.shutdown()


class _Bar:
    """A rich progress bar on stderr, or nothing."""

    def __init__(self, show: bool, description: str, total: int, done: int):
        self.show, self.description, self.total, self.done = show, description, total, done

    def __enter__(self):
        if self.show:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.description, total=self.total, completed=self.done)
        return self

    def advance(self) -> None:
        if self.show:
            self.bar.advance(self.task)

    def __exit__(self, *exc):
        if self.show:
            self.bar.__exit__(*exc)
        return False
