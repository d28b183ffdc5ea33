"""Training steps (forward, backward, AdamW step) of the plain-torch Llama-3.2-1B and -3B shapes,
on one GPU and under DDP, FSDP2, tensor and pipeline parallelism.

A step's time is the host clock from the step's start to the device going idle (every rank starts
a step together, after a barrier; automatic garbage collection off), median over TIMED_STEPS steps
after WARMUP_STEPS warm-up steps of the same shape (DTensor's sharding-propagation cache, the
allocator, cuBLAS heuristics and NCCL channels all settle there), the slowest rank's median;
time_p10_s / time_p90_s give the spread. host_s is the median time until the host has issued the
whole step (step() returned, the device possibly still running): the framework's own cost;
host_forward_s / host_backward_s / host_optimizer_s split it by phase (not for the pipeline).
Each grid holds a host probe (micro-batch 1, 128 tokens: the GPU has almost nothing to do, so the
step time is the framework's host time) at two depths, so host time per layer and per step are
measured, not fitted. Peak memory is the largest torch.cuda.max_memory_allocated over the ranks,
reset after warm-up.
"""

from __future__ import annotations

import gc
import os
import statistics
import time
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from calibrate.context import BenchContext
from calibrate.llama import LLAMA_3_2_1B, LLAMA_3_2_3B, SMOKE, Llama, lm_loss, probe_gqa
from calibrate.pipeline import PipelineStep
from calibrate.strategies import Wrapped, wrap_ddp, wrap_fsdp, wrap_single, wrap_tp

WARMUP_STEPS = 5
TIMED_STEPS = 20
MIN_TIMED_STEPS = 15
# A slow point takes fewer timed steps (never fewer than MIN_TIMED_STEPS) to stay in budget.
TIMED_WALL_S = 2.5
# Host probe: so few tokens that the GPU work is small beside the framework's host time.
HOST_PROBE = (1, 128)
# The probe at a second depth separates host time per layer from host time per step.
PROBE_LAYERS = 4
# DataParallelStep's host phases (empty for the pipeline, whose schedule interleaves them).
HOST_PHASE_COLUMNS = ("host_forward_s", "host_backward_s", "host_optimizer_s")


def train_grid(smoke: bool, strategy: str = "single"):
    """[(config, [(micro_batch, seq_len), ...])]: the host probes first, then per model from
    host-bound (1 x 1024 tokens) to GPU-bound (1B: 4 x 4096 tokens, 3B: 2 x 2048); the pipeline,
    which runs 2 x world micro-batches a step, stops at 2 x 2048 for both.  About 35-50 s per
    strategy on H200s (5 warm-up + 15-20 timed steps and ~1 s of set-up per point)."""
    if smoke:
        # Four KV heads and four layers: tensor and pipeline parallelism split them over 4 ranks.
        deep = replace(SMOKE, n_kv_heads=4, n_layers=8)
        return [(replace(deep, name=f"{SMOKE.name}-4l", n_layers=4), [(1, 16)]),
                (deep, [(1, 16), (2, 16)])]
    shallow = replace(LLAMA_3_2_1B, name=f"{LLAMA_3_2_1B.name}-{PROBE_LAYERS}l",
                      n_layers=PROBE_LAYERS)
    small = [HOST_PROBE, (1, 1024), (2, 2048)]
    if strategy == "pp":
        points_1b = small
    elif strategy == "tp":
        points_1b = [HOST_PROBE, (1, 1024), (4, 4096)]     # DTensor TP is host-bound up to 4k tokens
    else:
        points_1b = small + [(4, 4096)]
    return [(shallow, [HOST_PROBE]), (LLAMA_3_2_1B, points_1b), (LLAMA_3_2_3B, small)]


def _max_over_ranks(value: float, device) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class StepTiming:
    """Each figure the maximum over ranks of that rank's statistic."""

    time_s: float           # median step
    p10_s: float
    p90_s: float
    host_s: float           # median host time to issue a step
    peak_bytes: int
    steps: int              # timed steps
    host_phases_s: tuple | None = None   # medians of DataParallelStep.host_phases_s
    sm_clock_mhz: float | None = None    # median SM clock sampled as each step's host returned
    device: "DeviceBusy | None" = None   # one profiled step's kernel time (after the timed ones)


@dataclass(frozen=True)
class DeviceBusy:
    """What the device did in one profiled step, each figure the maximum over ranks: the union
    of compute kernel intervals (memcpy/memset included), of communication (NCCL) kernel
    intervals, and the kernel count. Beside the step's wall time it separates device time from
    the framework's host time, so a cost model's device prediction is checked on its own."""

    compute_s: float
    comm_s: float
    kernels: int


def timed_step_count(warm_step_s: float, smoke: bool) -> int:
    """TIMED_STEPS, or fewer for a slow step so the point takes about TIMED_WALL_S."""
    if smoke:
        return 2
    return max(MIN_TIMED_STEPS, min(TIMED_STEPS, int(TIMED_WALL_S / max(warm_step_s, 1e-6))))


def sm_clock_mhz(device) -> float | None:
    """The GPU's SM clock now (NVML through torch; None without pynvml or a GPU). A host-bound
    step leaves the GPU idle enough to clock down, which slows the kernels it does run."""
    if device.type != "cuda":
        return None
    try:
        return float(torch.cuda.clock_rate(device))
    except Exception:
        return None


def _union_s(spans: list) -> float:
    """Seconds covered by the union of (start_us, end_us) intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total * 1e-6


def device_busy(step, device) -> DeviceBusy | None:
    """One step under torch.profiler (CUDA activity only); its kernels read from the exported
    Chrome trace, whose event categories are stable across torch versions. Every rank runs it
    (the step's collectives need all ranks); None off CUDA or if the profiler fails on any rank."""
    if device.type != "cuda":
        return None
    import json
    import tempfile
    from torch.profiler import ProfilerActivity, profile
    compute, comm, kernels = [], [], 0
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            _one_step(step, device)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "busy.json")
            prof.export_chrome_trace(path)
            with open(path) as f:
                events = json.load(f).get("traceEvents", [])
        for e in events:
            if e.get("ph") != "X" or e.get("cat") not in ("kernel", "gpu_memcpy", "gpu_memset"):
                continue
            span = (float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0.0)))
            kernels += e["cat"] == "kernel"
            (comm if "nccl" in e.get("name", "").lower() else compute).append(span)
        ok = kernels > 0
    except Exception:
        ok = False
    if not _agree_ok(ok, device):
        return None
    return DeviceBusy(_max_over_ranks(_union_s(compute), device),
                      _max_over_ranks(_union_s(comm), device),
                      int(_max_over_ranks(float(kernels), device)))


def _one_step(step, device, clocks: list | None = None) -> tuple[float, float]:
    """(wall seconds until the device is idle, seconds until the host returned from step());
    appends the SM clock while the device still runs the step to `clocks`."""
    if dist.is_initialized():
        dist.barrier()
    _sync(device)
    t0 = time.perf_counter()
    step()
    issued = time.perf_counter()
    if clocks is not None:
        clocks.append(sm_clock_mhz(device))
    _sync(device)
    return time.perf_counter() - t0, issued - t0


def time_steps(step, device, smoke: bool) -> StepTiming:
    """Warm-up steps of this shape, then the timed ones; figures are maxima over ranks."""
    warm = [_one_step(step, device)[0] for _ in range(1 if smoke else WARMUP_STEPS)]
    # Every rank must run the same number of steps: agree on the slowest rank's warm step.
    n = timed_step_count(_max_over_ranks(warm[-1], device), smoke)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    walls, hosts, phases, clocks = [], [], [], []
    # As large-scale trainers do (torchtitan's gc_freq): no automatic garbage collection inside
    # steps, the long-lived objects frozen out of the collected generations. A full collection
    # over the model's and DTensor's objects costs tens of ms and otherwise lands in random steps.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        for _ in range(n):
            wall, host = _one_step(step, device, clocks)
            walls.append(wall)
            hosts.append(host)
            phases.append(getattr(step, "host_phases_s", None))
    finally:
        gc.enable()
        gc.unfreeze()
    deciles = statistics.quantiles(walls, n=10, method="inclusive")
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    by_phase = None
    if phases[0] is not None:
        by_phase = tuple(_max_over_ranks(statistics.median(p[i] for p in phases), device)
                         for i in range(len(phases[0])))
    # Every rank joins the reduction; a rank without a clock reading contributes 0.
    clock = statistics.median(c for c in clocks if c is not None) if any(c is not None for c in clocks) else 0.0
    clock = -_max_over_ranks(-clock, device) if clock else _max_over_ranks(0.0, device)
    busy = None if smoke else device_busy(step, device)
    return StepTiming(_max_over_ranks(statistics.median(walls), device),
                      _max_over_ranks(deciles[0], device), _max_over_ranks(deciles[-1], device),
                      _max_over_ranks(statistics.median(hosts), device),
                      int(_max_over_ranks(float(peak), device)), n, by_phase, clock or None, busy)


class DataParallelStep:
    """One step of a model whose forward returns logits: forward, loss, backward, AdamW.
    host_phases_s: the host seconds the last call spent issuing forward + loss, backward, and the
    optimizer step + zero_grad (nothing in a step waits for the device, so these are issue times)."""

    def __init__(self, wrapped: Wrapped, ids, targets, device):
        self.wrapped, self.ids, self.targets, self.device = wrapped, ids, targets, device
        self.host_phases_s = (0.0, 0.0, 0.0)

    def __call__(self) -> None:
        w = self.wrapped
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=w.autocast):
            loss = lm_loss(w.model(self.ids), self.targets)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        w.optimizer.step()
        w.optimizer.zero_grad(set_to_none=True)
        self.host_phases_s = (t1 - t0, t2 - t1, time.perf_counter() - t2)


def data_parallel_step(wrapped: Wrapped, ids, targets, device) -> DataParallelStep:
    return DataParallelStep(wrapped, ids, targets, device)


def _batch(cfg, micro_batch, seq_len, device, seed):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(0, cfg.vocab, (micro_batch, seq_len), generator=gen).to(device)
    targets = torch.randint(0, cfg.vocab, (micro_batch, seq_len), generator=gen).to(device)
    return ids, targets


def _agree_ok(ok: bool, device) -> bool:
    """True only if every rank succeeded, so all ranks skip a failed point together."""
    return _max_over_ranks(0.0 if ok else 1.0, device) == 0.0


def _cleanup(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def wrap(strategy: str, model, device) -> Wrapped:
    if strategy == "single":
        return wrap_single(model, device)
    if strategy == "ddp":
        return wrap_ddp(model, device)
    if strategy == "fsdp":
        return wrap_fsdp(model, device)
    if strategy == "tp":
        return wrap_tp(model, device)
    raise ValueError(f"train_step: unknown strategy {strategy!r}")


def run_strategy(ctx: BenchContext, strategy: str, grid=None, table_name="train_step.csv",
                 detail_suffix: str = "") -> None:
    """All (model, micro-batch, sequence) points of one strategy into train_step.csv."""
    device, world = ctx.device, (dist.get_world_size() if dist.is_initialized() else 1)
    gqa = probe_gqa(device)
    with ctx.table(table_name) as out:
        for cfg, points in grid or train_grid(ctx.smoke, strategy):
            if ctx.expired():
                ctx.skipped += len(points)
                continue
            wrapped = None
            if strategy != "pp":
                torch.manual_seed(0)
                model = Llama(cfg, max_pos=max(s for _, s in points), device=device)
                model.set_gqa(gqa)
                wrapped = wrap(strategy, model, device)
            for mb, seq in points:
                if ctx.expired():
                    ctx.skipped += 1
                    continue
                grad_accum = 2 * world if strategy == "pp" else 1
                ok, err = True, ""
                try:
                    if strategy == "pp":
                        step = PipelineStep(cfg, device, mb, seq, grad_accum, gqa)
                        precision, detail = step.precision, step.detail
                        dp = 1
                    else:
                        ids, targets = _batch(cfg, mb, seq, device, seed=1)
                        step = data_parallel_step(wrapped, ids, targets, device)
                        precision, detail, dp = wrapped.precision, wrapped.detail, \
                            wrapped.data_parallel
                    timing = time_steps(step, device, ctx.smoke)
                except torch.cuda.OutOfMemoryError:
                    ok, err = False, "out of memory"
                except Exception as exc:
                    ok, err = False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                step = None
                if wrapped is not None:
                    wrapped.optimizer.zero_grad(set_to_none=True)
                _cleanup(device)
                if not _agree_ok(ok, device):
                    ctx.note(f"train_step {cfg.name} {strategy} ws={world} mb={mb} s={seq}: "
                             f"{err or 'failed on another rank'}")
                    continue
                tokens = mb * seq * grad_accum * dp
                t, busy = timing.time_s, timing.device
                out.add(model=cfg.name, strategy=strategy, world_size=world, micro_batch=mb,
                        seq_len=seq, grad_accum=grad_accum, time_s=t,
                        peak_memory_bytes=timing.peak_bytes, tokens_per_s=tokens / t,
                        precision=precision, n_layers=cfg.n_layers, detail=detail + detail_suffix,
                        time_p10_s=timing.p10_s, time_p90_s=timing.p90_s, host_s=timing.host_s,
                        timed_steps=timing.steps, sm_clock_mhz=timing.sm_clock_mhz,
                        device_compute_s=busy.compute_s if busy else None,
                        device_comm_s=busy.comm_s if busy else None,
                        kernels_per_step=busy.kernels if busy else None,
                        **dict(zip(HOST_PHASE_COLUMNS, timing.host_phases_s or (None,) * 3)))
            wrapped = model = None
            _cleanup(device)
    ctx.note(f"train_step {strategy} ws={world}: {WARMUP_STEPS} warm-up steps per point, median "
             f"of {MIN_TIMED_STEPS}-{TIMED_STEPS} timed steps (host clock, barrier + synchronize "
             f"around each; automatic gc off and long-lived objects frozen while timing), p10/p90 "
             f"and host issue time beside it; GQA via {gqa}; CPU affinity "
             f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} cores")
    if ctx.skipped:
        ctx.note(f"train_step {strategy}: time budget ran out, {ctx.skipped} points skipped")


def run_single(ctx: BenchContext) -> None:
    run_strategy(ctx, "single")
