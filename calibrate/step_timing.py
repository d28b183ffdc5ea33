"""Timing training steps: the points of one model interleaved, so that each sees the same host.

A host-bound eager step is as fast as the CPU that issues it, and a lent virtual machine's CPU
speed drifts over seconds to minutes: two runs of the same grid on the same kind of machine
differed by up to 74% in host-bound step time while the GPU-bound points agreed within 1%, and
points timed one after another differed by 15-35% in host time for the same op sequence. Timing
a model's points in rounds (one step of each point per round, the order reversed every other
round) gives every point's median the same drift, so a host probe measures the host its model's
other points ran on. Warm-up still runs point by point (5 steps of each shape: allocator, cuBLAS
heuristics, DTensor's sharding-propagation cache and NCCL channels settle there).

A step's time is the host clock from the step's start (every rank starts together, after a
barrier) to the device going idle; host_s the time until step() returned (the device possibly
still running); the figures of a point are the slowest rank's medians. Peak memory is the largest
torch.cuda.max_memory_allocated over the point's own steps; where each point holds its own model
(the pipeline builds one per point) the bytes the other points keep resident are taken off.
After the timed rounds one more step of each point runs under the profiler (DeviceBusy).

How many rounds: at least 15-20, then more until every point's median is known to within
TARGET_CI_FRACTION (the 95% distribution-free confidence interval of a median, from order
statistics), or the family's extra time (EXTRA_WALL_S) or MAX_TIMED_STEPS runs out. A GPU-bound
point meets the target in its first rounds; a host-bound DTensor point, whose steps scatter by
+-20% on a lent VM, needs ~100: 15 rounds left its median uncertain by +-6%, too loose to check a
model against 10%. Each timing carries the interval it reached and every round's step time.
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

WARMUP_STEPS = 5
TIMED_STEPS = 20
MIN_TIMED_STEPS = 15
# A slow model takes fewer rounds (never fewer than MIN_TIMED_STEPS) to stay in budget.
TIMED_WALL_S = 2.5
# Rounds go on until every point's median is this well known (95% interval half-width / median)...
TARGET_CI_FRACTION = 0.025
# ...or until this many rounds, or this long (seconds of timed rounds per family) past the first ones.
MAX_TIMED_STEPS = 200
EXTRA_WALL_S = 80.0
# Two-sided 95% normal quantile, for the order statistics bounding a median.
Z_95 = 1.96


@dataclass(frozen=True)
class DeviceBusy:
    """What the device did in one profiled step, each figure the maximum over ranks: the union
    of compute kernel intervals (memcpy/memset included), of communication (NCCL) kernel
    intervals, and the kernel count. Beside the step's wall time it separates device time from
    the framework's host time, so a cost model's device prediction is checked on its own."""

    compute_s: float
    comm_s: float
    kernels: int


@dataclass(frozen=True)
class StepTiming:
    """Each figure the maximum over ranks of that rank's statistic."""

    time_s: float           # median step
    p10_s: float
    p90_s: float
    host_s: float           # median host time to issue a step
    peak_bytes: int
    steps: int              # timed steps
    host_phases_s: tuple | None = None   # medians of the step's host_phases_s, where it has them
    sm_clock_mhz: float | None = None    # median SM clock sampled as each step's host returned
    device: DeviceBusy | None = None     # one profiled step's kernel time (after the timed ones)
    ci_low_s: float | None = None        # 95% confidence interval of the median step
    ci_high_s: float | None = None
    rounds: tuple = ()                   # (step s, host s) of every round, each the slowest rank's


def max_over_ranks(value: float, device) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def agree_ok(ok: bool, device) -> bool:
    """True only if every rank succeeded, so all ranks drop a failed point together."""
    return max_over_ranks(0.0 if ok else 1.0, device) == 0.0


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cleanup(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed_step_count(warm_step_s: float, smoke: bool) -> int:
    """TIMED_STEPS, or fewer for a slow step so the point takes about TIMED_WALL_S."""
    if smoke:
        return 2
    return max(MIN_TIMED_STEPS, min(TIMED_STEPS, int(TIMED_WALL_S / max(warm_step_s, 1e-6))))


def median_ci(values: list, z: float = Z_95) -> tuple[float, float]:
    """(low, high): the distribution-free confidence interval of the median of `values`, between
    the order statistics of ranks n/2 -+ z*sqrt(n)/2, each rounded up (the large-sample quantile
    interval of Conover, Practical Nonparametric Statistics, 3rd ed., sec. 3.2), clipped to the
    sample. n = 15 gives ranks 4 and 12, the exact binomial interval's."""
    xs = sorted(values)
    n = len(xs)
    half = z * math.sqrt(n) / 2
    lo = min(max(math.ceil(n / 2 - half), 1), n)
    hi = min(max(math.ceil(n / 2 + half), 1), n)
    return xs[lo - 1], xs[hi - 1]


def ci_fraction(values: list) -> float:
    """Half the median's confidence interval, as a fraction of the median."""
    lo, hi = median_ci(values)
    return (hi - lo) / 2 / max(statistics.median(values), 1e-12)


def sm_clock_mhz(device) -> float | None:
    """The GPU's SM clock now (NVML through torch; None without pynvml or a GPU). A host-bound
    step leaves the GPU idle enough to clock down, which slows the kernels it does run."""
    if device.type != "cuda":
        return None
    try:
        return float(torch.cuda.clock_rate(device))
    except Exception:
        return None


def union_s(spans: list) -> float:
    """Seconds covered by the union of (start_us, end_us) intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total * 1e-6


def one_step(step, device, clocks: list | None = None) -> tuple[float, float]:
    """(wall seconds until the device is idle, seconds until the host returned from step());
    appends the SM clock while the device still runs the step to `clocks`."""
    if dist.is_initialized():
        dist.barrier()
    sync(device)
    t0 = time.perf_counter()
    step()
    issued = time.perf_counter()
    if clocks is not None:
        clocks.append(sm_clock_mhz(device))
    sync(device)
    return time.perf_counter() - t0, issued - t0


def device_busy(step, device) -> DeviceBusy | None:
    """One step under torch.profiler (CUDA activity only); its kernels read from the exported
    Chrome trace, whose event categories are stable across torch versions. Every rank runs it
    (the step's collectives need all ranks); None off CUDA or if the profiler fails on any rank."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile
    compute, comm, kernels = [], [], 0
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            one_step(step, device)
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
    if not agree_ok(ok, device):
        return None
    return DeviceBusy(max_over_ranks(union_s(compute), device),
                      max_over_ranks(union_s(comm), device),
                      int(max_over_ranks(float(kernels), device)))


OOM = "out of memory"


def _error(exc: Exception) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return OOM
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def _allocated(device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else 0


@dataclass
class _Point:
    owner: object = None
    step: object = None
    error: str = ""
    warm_s: float = 0.0

    def __post_init__(self):
        self.walls, self.hosts, self.phases, self.clocks, self.peak = [], [], [], [], 0
        self.known = False


def time_interleaved(makers: list, device, smoke: bool, deadline_s: float = float("inf"),
                     retire: bool = False) -> list:
    """StepTiming or an error string for each (owner, make) in makers, in order: `make` builds one
    point's step (a zero-argument callable); `owner` names what holds that step's model and
    optimizer (the model's config where points share one model, the point itself where each
    builds its own). The steps are built and warmed up one by one, then timed in rounds until
    their medians are known (see the module's docstring; no round starts past `deadline_s`, a
    time.monotonic() value, once the first ones are done). The bytes an owner leaves allocated
    (its weights, gradient buckets, optimizer states) are taken off the peaks of the other
    owners' points, so each peak is what its own model would reach. With `retire`, a point leaves
    the rounds once its own median is known (a device-bound point's in its first rounds), so the
    further rounds go to the points that need them."""
    points, resident = [], {}
    for owner, make in makers:
        p, before = _Point(owner=owner), _allocated(device)
        try:
            p.step = make()
            warm = [one_step(p.step, device)[0] for _ in range(1 if smoke else WARMUP_STEPS)]
            p.warm_s = warm[-1]
        except Exception as exc:
            p.error, p.step = _error(exc), None
        if not agree_ok(p.step is not None, device):
            p.step, p.error = None, p.error or "failed on another rank"
            cleanup(device)
        resident[owner] = resident.get(owner, 0) + _allocated(device) - before
        points.append(p)
    live = [p for p in points if p.step is not None]
    if not live:
        return [p.error for p in points]
    # Every rank must run the same number of rounds: agree on the slowest rank's warm steps.
    first = timed_step_count(max_over_ranks(max(p.warm_s for p in live), device), smoke)
    last = first if smoke else MAX_TIMED_STEPS
    resident_all = _allocated(device)
    # As large-scale trainers do (torchtitan's gc_freq): no automatic garbage collection inside
    # steps, the long-lived objects frozen out of the collected generations. A full collection
    # over the model's and DTensor's objects costs tens of ms and otherwise lands in random steps.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        round_, extra_from = 0, None
        while True:
            for p in (live if round_ % 2 == 0 else live[::-1]):
                if p.step is not None and not p.known:
                    _timed_step(p, device, resident_all - resident[p.owner])
            round_ += 1
            if round_ < first:
                continue
            for p in live if retire else ():
                if p.step is not None and not p.known:
                    p.known = max_over_ranks(ci_fraction(p.walls), device) <= TARGET_CI_FRACTION
            extra_from = extra_from or time.monotonic()
            if round_ >= last or _known(live, extra_from, deadline_s, device):
                break
    finally:
        gc.enable()
        gc.unfreeze()
    return [_summary(p, device, smoke) if p.step is not None else p.error for p in points]


def _timed_step(p: _Point, device, others_bytes: int) -> None:
    """One timed step of point p; a failure on any rank drops the point on every rank."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        wall, host = one_step(p.step, device, p.clocks)
        ok = True
    except Exception as exc:
        ok, p.error = False, _error(exc)
    if not agree_ok(ok, device):
        p.step, p.error = None, p.error or "failed on another rank"
        return
    p.walls.append(wall)
    p.hosts.append(host)
    p.phases.append(getattr(p.step, "host_phases_s", None))
    if device.type == "cuda":
        p.peak = max(p.peak, torch.cuda.max_memory_allocated(device) - others_bytes)


def _known(live: list, extra_from: float, deadline_s: float, device) -> bool:
    """True on every rank once every live point's median is within TARGET_CI_FRACTION on every
    rank, or once any rank has spent EXTRA_WALL_S on further rounds or passed the deadline."""
    wide = max((ci_fraction(p.walls) for p in live if p.step is not None), default=0.0)
    now = time.monotonic()
    late = now - extra_from > EXTRA_WALL_S or now > deadline_s
    return (max_over_ranks(wide, device) <= TARGET_CI_FRACTION
            or max_over_ranks(float(late), device) > 0)


def per_round_max(values: list, device) -> list:
    """values (one per round, the same count on every rank), each the maximum over ranks."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def _summary(p: _Point, device, smoke: bool) -> StepTiming:
    """The point's figures, each the maximum over ranks (every rank joins every reduction)."""
    deciles = statistics.quantiles(p.walls, n=10, method="inclusive")
    by_phase = None
    if p.phases[0] is not None:
        by_phase = tuple(max_over_ranks(statistics.median(ph[i] for ph in p.phases), device)
                         for i in range(len(p.phases[0])))
    # A rank without a clock reading contributes 0; the slowest clock is kept.
    readings = [c for c in p.clocks if c is not None]
    clock = statistics.median(readings) if readings else 0.0
    clock = -max_over_ranks(-clock, device) if clock else max_over_ranks(0.0, device)
    busy = None if smoke else device_busy(p.step, device)
    low, high = median_ci(p.walls)
    rounds = tuple(zip(per_round_max(p.walls, device), per_round_max(p.hosts, device)))
    return StepTiming(max_over_ranks(statistics.median(p.walls), device),
                      max_over_ranks(deciles[0], device), max_over_ranks(deciles[-1], device),
                      max_over_ranks(statistics.median(p.hosts), device),
                      int(max_over_ranks(float(p.peak), device)), len(p.walls), by_phase,
                      clock or None, busy, max_over_ranks(low, device), max_over_ranks(high, device),
                      rounds)
