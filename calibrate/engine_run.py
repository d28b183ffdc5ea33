"""Serve requests through transformers' continuous-batching engine and time every request and iteration.

The engine is `model.init_continuous_batching(...)` (transformers 5.x). Its API moves between
releases, so every optional knob is passed only if this version has it, and the iteration
instrumentation attaches only to the methods it finds; what was found is reported.

Clock: `time.perf_counter`, the clock the engine stamps tokens with.

Besides wall times, each iteration records the generation thread's CPU time (below its wall time it
was waiting: for the GIL, the OS scheduler or a non-spinning GPU sync), the Python garbage
collection that ran during it, in any thread (a collection holds the GIL, so it stalls the engine),
the wall time of the forward's launch (`model_runner.compute_batch`: in sync mode it returns once
every kernel is queued) and the GPU span from before the first launch to after the last kernel
(CUDA events on the compute stream). gpu_s close to launch_s: the GPU waited on the host;
gpu_s well above launch_s: the GPU was the bottleneck.
"""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
from dataclasses import dataclass, field

ITERATION_COLUMNS = ("phase", "start_s", "prepare_s", "step_s", "update_s", "n_requests", "q_tokens",
                     "kv_read_tokens", "n_decode", "n_prefill_chunks", "n_first_tokens", "thread_cpu_s", "gc_s",
                     "gc_collections", "launch_s", "gpu_s")


@dataclass
class EngineSettings:
    """Scheduler settings the run asks for; `resolved` holds what the engine actually used."""

    block_size: int = 256
    num_blocks: int = 640
    max_batch_tokens: int = 2048
    max_requests_per_batch: int = 128
    use_cuda_graph: bool = False
    use_async_batching: bool = False
    allow_block_sharing: bool = False
    scheduler_type: str = "fifo"
    attn_implementation: str = "sdpa"
    # CUDA-graph padding granularity in tokens (0: the engine's preset); the engine pads each batch's
    # query tokens and KV tokens up to these multiples so a captured graph can be replayed.
    q_padding_interval_size: int = 0
    kv_padding_interval_size: int = 0
    # torch.compile level of the engine's forward when no compile config is given (0: none).
    default_compile_level: int = 0
    resolved: dict = field(default_factory=dict)


def _cb_config(settings: EngineSettings):
    """A ContinuousBatchingConfig with only the fields this transformers version knows."""
    from transformers.generation import ContinuousBatchingConfig
    known = {f.name for f in dataclasses.fields(ContinuousBatchingConfig)} if dataclasses.is_dataclass(
        ContinuousBatchingConfig) else set(ContinuousBatchingConfig.__init__.__code__.co_varnames)
    wanted = {k: getattr(settings, k) for k in ("block_size", "num_blocks", "max_batch_tokens",
                                                 "max_requests_per_batch", "use_cuda_graph",
                                                 "use_async_batching", "allow_block_sharing", "scheduler_type",
                                                 "q_padding_interval_size", "kv_padding_interval_size",
                                                 "default_compile_level")}
    # Padding sizes left at 0 mean "engine preset"; passing 0 is the same as not passing them.
    for k in ("q_padding_interval_size", "kv_padding_interval_size", "default_compile_level"):
        if not wanted[k]:
            wanted.pop(k)
    return ContinuousBatchingConfig(**{k: v for k, v in wanted.items() if k in known}), sorted(set(wanted) - known)


def _plain_value(v):
    return list(v) if isinstance(v, tuple) else v


def _allocator_counts() -> dict:
    """cudaMalloc/cudaFree calls and allocation retries of torch's caching allocator so far: when they
    grow within a phase, the allocator is churning (each call can synchronise the device)."""
    try:
        import torch
        if not torch.cuda.is_available():
            return {}
        st = torch.cuda.memory_stats()
    except (ImportError, RuntimeError):
        return {}
    return {k: int(st.get(k, 0)) for k in ("num_device_alloc", "num_device_free", "num_alloc_retries")}


def _status_name(result) -> str:
    if result is None:
        return "UNFINISHED"
    status = getattr(result, "status", "")
    return getattr(status, "name", str(status))


class IterationLog:
    """Wraps the batch processor's per-iteration methods to record their wall times and batch shape."""

    def __init__(self):
        self.rows: list[tuple] = []
        self.phase = ""
        self._open: dict = {}
        self.attached: list[str] = []
        self.gc_s = 0.0             # seconds spent in Python GC since the log was made, all threads
        self.gc_collections = 0
        self._gc_t0 = 0.0

    def _gc_callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            self.gc_s += time.perf_counter() - self._gc_t0
            self.gc_collections += 1

    def watch_gc(self, on: bool) -> None:
        """Count the time of every garbage collection (gc.callbacks) while on."""
        if on and self._gc_callback not in gc.callbacks:
            gc.callbacks.append(self._gc_callback)
        elif not on and self._gc_callback in gc.callbacks:
            gc.callbacks.remove(self._gc_callback)

    def attach(self, processor) -> None:
        self.attached = []
        sched = getattr(processor, "scheduler", None)
        if sched is not None and hasattr(sched, "schedule_batch"):
            inner = sched.schedule_batch

            def schedule_batch(*a, **k):
                out = inner(*a, **k)
                reqs = out[0] or []
                q = out[2] if len(out) > 2 else 0
                kv = out[3] if len(out) > 3 else 0
                dec = sum(1 for r in reqs if getattr(r, "query_length", 0) == 1)
                first = sum(1 for r in reqs if getattr(r, "has_new_token", False) and getattr(r, "query_length", 0) > 1)
                self._open.update(n_requests=len(reqs), q_tokens=int(q), kv_read_tokens=int(kv), n_decode=dec,
                                  n_prefill_chunks=len(reqs) - dec, n_first_tokens=first)
                return out
            sched.schedule_batch = schedule_batch
            self.attached.append("scheduler.schedule_batch")
        for name, key in (("prepare_next_batch", "prepare"), ("_generation_step", "step"), ("update_batch", "update")):
            if hasattr(processor, name):
                setattr(processor, name, self._timed(getattr(processor, name), key))
                self.attached.append(name)
        runner = getattr(processor, "model_runner", None)
        if runner is not None and hasattr(runner, "compute_batch"):
            stream = getattr(getattr(processor, "inputs_and_outputs", None), "compute_stream", None)
            runner.compute_batch = self._launch_timed(runner.compute_batch, stream)
            self.attached.append("model_runner.compute_batch")

    def _launch_timed(self, fn, stream):
        def compute_batch(*a, **k):
            import torch
            events = None
            if torch.cuda.is_available():
                s = stream if stream is not None else torch.cuda.current_stream()
                events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                events[0].record(s)
            t0 = time.perf_counter()
            out = fn(*a, **k)
            self._open["launch"] = time.perf_counter() - t0
            if events is not None:
                events[1].record(s)
                self._open["events"] = events
            return out
        return compute_batch

    def resolve_gpu_times(self) -> None:
        """Turn the CUDA events kept in each row into GPU seconds. Done after a phase, not in the
        iteration: with async batching the events of the batch in flight are not complete at its
        update, and waiting on them would serialise the CPU and GPU work the engine overlaps."""
        for i, r in enumerate(self.rows):
            events = r[15]
            if isinstance(events, tuple):
                events[1].synchronize()
                self.rows[i] = (*r[:15], events[0].elapsed_time(events[1]) / 1000.0)

    def _timed(self, fn, key):
        def wrapper(*a, **k):
            if key == "prepare":
                cpu0, gc0, n0 = time.thread_time(), self.gc_s, self.gc_collections
            t0 = time.perf_counter()
            out = fn(*a, **k)
            t1 = time.perf_counter()
            if key == "prepare":
                if out:   # a batch was scheduled: an iteration begins
                    self._open.update(start=t0, prepare=t1 - t0, cpu0=cpu0, gc0=gc0, n0=n0)
                else:
                    self._open = {}
            elif key == "step" and "start" in self._open:
                self._open["step"] = t1 - t0
            elif key == "update" and "start" in self._open:
                o = self._open
                self.rows.append((self.phase, o["start"], o["prepare"], o.get("step", 0.0), t1 - t0,
                                  o.get("n_requests", 0), o.get("q_tokens", 0), o.get("kv_read_tokens", 0),
                                  o.get("n_decode", 0), o.get("n_prefill_chunks", 0), o.get("n_first_tokens", 0),
                                  time.thread_time() - o["cpu0"], self.gc_s - o["gc0"],
                                  self.gc_collections - o["n0"], o.get("launch", float("nan")),
                                  o.get("events", float("nan"))))
                self._open = {}
            return out
        return wrapper


class Engine:
    """One continuous-batching manager over one model, serving phases of requests one after another.
    `iterations` collects the per-iteration rows; pass one log to several engines to gather them all."""

    def __init__(self, model, settings: EngineSettings, log=print, iterations: IterationLog | None = None):
        from transformers import GenerationConfig
        self.settings, self.log = settings, log
        # The engine runs `paged|<attention>` of whatever the model was built with; switch the base
        # attention when this engine asks for another one (the manager restores it on stop).
        base = getattr(model.config, "_attn_implementation", "").removeprefix("paged|")
        if base != settings.attn_implementation and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(settings.attn_implementation)
        gen = GenerationConfig(do_sample=False, eos_token_id=-1, pad_token_id=0, max_new_tokens=256)
        cb, dropped = _cb_config(settings)
        if dropped:
            log(f"engine: this transformers has no {dropped} in ContinuousBatchingConfig; left at its defaults")
        try:
            self.manager = model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
        except TypeError:   # older 5.x took the settings on GenerationConfig
            for k, v in dataclasses.asdict(cb).items():
                setattr(gen, k, v)
            self.manager = model.init_continuous_batching(generation_config=gen)
        m = self.manager
        t0 = time.perf_counter()
        if hasattr(m, "warmup"):
            m.warmup()
        elif hasattr(m, "_create_batch_processor"):
            m.batch_processor = m._create_batch_processor()
        self.warmup_s = time.perf_counter() - t0
        self.iterations = iterations if iterations is not None else IterationLog()
        if getattr(m, "batch_processor", None) is not None:
            self.iterations.attach(m.batch_processor)
        log(f"engine: instrumentation on {self.iterations.attached or 'nothing (per-iteration log unavailable)'}")
        settings.resolved = self._resolved()
        m.start()
        self.t0 = time.perf_counter()

    def _resolved(self) -> dict:
        m = self.manager
        cfg = getattr(m, "continuous_batching_config", None)
        out = {}
        if cfg is not None:
            for k in ("block_size", "num_blocks", "max_batch_tokens", "max_requests_per_batch", "use_cuda_graph",
                      "use_async_batching", "allow_block_sharing", "scheduler_type", "safety_margin",
                      "max_blocks_per_request", "max_memory_percent", "default_compile_level",
                      "q_padding_interval_size", "kv_padding_interval_size", "max_cached_graphs"):
                if hasattr(cfg, k):
                    v = getattr(cfg, k)
                    out[k] = list(v) if isinstance(v, tuple) else v
            for k in ("varlen_compile_config", "decode_compile_config"):
                v = getattr(cfg, k, None)
                out[k] = None if v is None else {a: getattr(v, a, None) for a in ("mode", "dynamic", "fullgraph")}
        bp = getattr(m, "batch_processor", None)
        cache = getattr(bp, "cache", None)
        for k in ("num_blocks", "block_size", "max_batch_tokens", "num_pages"):
            if cache is not None and hasattr(cache, k):
                out[f"cache.{k}"] = int(getattr(cache, k))
        sched = getattr(bp, "scheduler", None)
        if sched is not None:
            out["scheduler.class"] = type(sched).__name__
            out["scheduler.safety_margin"] = getattr(sched, "safety_margin", None)
        out["attn_implementation"] = getattr(m.model.config, "_attn_implementation", "")
        for k in ("use_cuda_graph", "use_async_batching", "q_padding_interval_size", "kv_padding_interval_size",
                  "_pad_inputs"):
            if bp is not None and hasattr(bp, k):
                out[f"processor.{k}"] = _plain_value(getattr(bp, k))
        io = getattr(bp, "inputs_and_outputs", None)
        out["processor.io_class"] = type(io).__name__
        out["processor.io_streams"] = [k for k in dir(io) if "stream" in k.lower() and not k.startswith("__")]
        return out

    def graph_counts(self) -> dict:
        """Sizes of every graph-holding container found on the batch processor, its IO buffers and its
        model runner (names vary by release): a count that grows while serving means captures."""
        bp = getattr(self.manager, "batch_processor", None)
        out = {}
        io = getattr(bp, "inputs_and_outputs", None)
        owners = [("processor", bp), ("inputs_and_outputs", io), ("model_runner", getattr(bp, "model_runner", None))]
        # Async batching keeps one IO pair (and one graph set) per in-flight batch.
        for i, pair in enumerate(getattr(io, "io_pairs", None) or []):
            owners.append((f"io_pairs[{i}].device_io", getattr(pair, "device_io", None)))
        for owner_name, owner in owners:
            if owner is None:
                continue
            for k in dir(owner):
                if "graph" not in k.lower() or k.startswith("__"):
                    continue
                try:
                    v = getattr(owner, k)
                except Exception:   # a property that cannot be read now says nothing about graphs
                    continue
                if callable(v):
                    continue
                key = f"{owner_name}.{k}"
                if hasattr(v, "__len__"):
                    try:
                        out[key] = len(v)
                    except TypeError:
                        pass
                elif isinstance(v, (bool, int, float, str, tuple)):
                    out[key] = _plain_value(v)
                else:   # a graph pool or cache object: report the sizes it carries
                    for a in dir(v):
                        if a.startswith("__"):
                            continue
                        try:
                            w = getattr(v, a)
                        except Exception:
                            continue
                        if isinstance(w, dict | list | tuple) or type(w).__name__ == "OrderedDict":
                            out[f"{key}.{a}"] = len(w)
        return out

    def serve(self, phase: str, arrival_s, prompts: list[list[int]], outputs, deadline_s: float) -> tuple[list[dict], float]:
        """Submit request i at arrival_s[i] seconds after this call; wait until all finish or the deadline.
        Returns (one record per request with times in seconds from this call's start, the start's clock)."""
        m = self.manager
        self.iterations.phase = phase
        n = len(prompts)
        submit = [float("nan")] * n
        ids = [f"{phase}_{i}" for i in range(n)]
        start = time.perf_counter()

        def feeder():
            for i in range(n):
                wait = start + float(arrival_s[i]) - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                submit[i] = time.perf_counter() - start
                m.add_request(prompts[i], request_id=ids[i], max_new_tokens=int(outputs[i]), record_timestamps=True)

        mem0 = _allocator_counts()
        th = threading.Thread(target=feeder, daemon=True)
        th.start()
        results: dict[str, object] = {}
        index = {rid: i for i, rid in enumerate(ids)}
        while len(results) < n and time.perf_counter() - start < deadline_s and self.alive():
            r = m.get_result(timeout=0.2)
            if r is not None and r.request_id in index:
                results[r.request_id] = r
        th.join(timeout=1.0)
        rows = []
        for i, rid in enumerate(ids):
            r = results.get(rid)
            stamps = (getattr(r, "timestamps", None) or []) if r is not None else []
            life = getattr(r, "lifespan", (-1, -1)) if r is not None else (-1, -1)
            rows.append({
                "request_id": i, "arrival_s": float(arrival_s[i]), "submit_s": submit[i],
                "scheduled_s": life[0] - start if life[0] > 0 else float("nan"),
                "first_token_s": stamps[0] - start if stamps else float("nan"),
                "finish_s": stamps[-1] - start if stamps else float("nan"),
                "prompt_tokens": len(prompts[i]), "output_tokens": int(outputs[i]),
                "generated_tokens": len(getattr(r, "generated_tokens", []) or []) if r is not None else 0,
                "status": _status_name(r),
                "error": (getattr(r, "error", None) or "") if r is not None else "",
            })
        mem1 = _allocator_counts()
        churn = ", ".join(f"{k} +{mem1[k] - mem0.get(k, 0)}" for k in mem1)
        self.log(f"engine: phase {phase}: {len(results)}/{n} finished in {time.perf_counter() - start:.1f} s"
                 + (f"; CUDA allocator: {churn}" if churn else ""))
        return rows, start

    def alive(self) -> bool:
        """False once the engine's generation thread has died (a fatal error: stop waiting for results)."""
        th = getattr(self.manager, "_generation_thread", None)
        return th is None or th.is_alive()

    def stop(self) -> None:
        """Stop the generation thread and drop the batch processor (its KV cache) so a fresh engine can start."""
        try:
            self.manager.stop(block=True, timeout=10)
        except TypeError:
            self.manager.stop()
        self.manager.batch_processor = None
        self.manager = None
        # Objects frozen by `settle` (gc.freeze) are never collected: the engine's reference cycles
        # (and the KV cache they hold) would outlive it and the next engine would not fit.
        gc.unfreeze()
        gc.collect()
        try:
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                self.log(f"engine: stopped; {torch.cuda.memory_allocated() / 2**30:.1f} GiB still allocated")
        except ImportError:
            pass
