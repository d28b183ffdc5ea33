"""Replay a recorded PyTorch profiler trace (Chrome / Kineto JSON) on SimPy, and ask what-if.

The trace gives, per GPU stream, the kernels in the order they ran (ph 'X', cat 'kernel',
'gpu_memcpy', 'gpu_memset'; tid = stream), and on the host the runtime calls that launched them
(cat 'cuda_runtime', linked to kernels by args.correlation). The dependency graph rebuilt here:
- stream order: a kernel follows the previous kernel of its stream;
- host order: a kernel cannot start before the host launched it; the host replays its recorded
  gaps between runtime calls, and a synchronising call (…Synchronize, blocking cudaMemcpy) waits
  for the issued kernels that had finished when it returned in the recording;
- cross-stream: from CUDA event record / wait (Kineto 'cuda_sync' events naming
  wait_on_cuda_event_record_corr_id), or, lacking those, inferred from the recorded timing: a
  kernel that started later than both its stream predecessor and its launch waited for another
  stream, so it depends on the other stream's kernel that ended last before it started.
Replay scales compute kernels and communication kernels (names with 'nccl') separately.
"""

from __future__ import annotations

import bisect
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import simpy

from simcluster.hardware.gpu import GpuSpec

DEVICE_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
HOST_CATS = ("cuda_runtime", "cuda_driver")       # cudaLaunchKernel..., cuLaunchKernelEx (Triton, NCCL)
SYNC_CALLS = ("cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize", "cudaMemcpy")
LAUNCH_SLACK_S = 8e-6          # a kernel starting within this of its launch/predecessor did not wait
MATMUL_MARKERS = ("gemm", "cutlass", "cublas", "sm80_", "sm90_", "flash", "fmha", "attention", "xmma")


class KinetoError(ValueError):
    """A file that is not a readable profiler trace."""


@dataclass
class Kernel:
    index: int
    name: str
    kind: str                  # 'compute', 'comm' or 'memcpy'
    stream: tuple              # (pid, tid)
    start_s: float
    dur_s: float
    correlation: int | None
    launch_s: float | None = None
    deps: list[int] = field(default_factory=list)

    @property
    def end_s(self) -> float:
        return self.start_s + self.dur_s


@dataclass
class HostCall:
    start_s: float
    dur_s: float
    kernel: int | None         # index of the kernel it launches
    sync: bool


@dataclass
class TraceGraph:
    kernels: list[Kernel]
    host: list[HostCall]
    steps: list[tuple[float, float]]     # recorded (start_s, end_s) of each ProfilerStep on the host
    inferred_deps: int = 0
    event_deps: int = 0


def load_trace(path: str | Path) -> dict:
    """The trace JSON of a .json or .json.gz file; KinetoError names the file if unreadable."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise KinetoError(f"{path}: not a readable trace JSON ({type(err).__name__})") from None
    if isinstance(data, list):
        data = {"traceEvents": data}
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise KinetoError(f"{path}: traceEvents: expected a list of trace events")
    return data


def kernel_kind(name: str, cat: str) -> str:
    if cat != "kernel":
        return "memcpy"
    return "comm" if "nccl" in name.lower() else "compute"


def build_graph(trace: dict) -> TraceGraph:
    """Rebuild kernels, host calls, dependencies and step windows from trace events (µs → s)."""
    events = [e for e in trace["traceEvents"] if isinstance(e, dict) and e.get("ph") == "X"]
    kernels: list[Kernel] = []
    for e in sorted((e for e in events if e.get("cat") in DEVICE_CATS), key=lambda e: (e["ts"], e.get("tid", 0))):
        args = e.get("args") or {}
        kernels.append(Kernel(len(kernels), e.get("name", ""), kernel_kind(e.get("name", ""), e["cat"]),
                              (e.get("pid"), e.get("tid")), e["ts"] * 1e-6, e.get("dur", 0) * 1e-6,
                              args.get("correlation")))
    by_corr = {k.correlation: k for k in kernels if k.correlation is not None}
    runtime = sorted((e for e in events if e.get("cat") in HOST_CATS), key=lambda e: e["ts"])
    host = []
    for e in runtime:
        corr = (e.get("args") or {}).get("correlation")
        k = by_corr.get(corr)
        if k is not None:
            k.launch_s = e["ts"] * 1e-6
        name = e.get("name", "")
        sync = name in SYNC_CALLS or name.endswith("Synchronize")
        if k is not None or sync:
            host.append(HostCall(e["ts"] * 1e-6, e.get("dur", 0) * 1e-6, k.index if k else None, sync))
    streams: dict[tuple, list[Kernel]] = {}
    for k in kernels:
        streams.setdefault(k.stream, []).append(k)
    graph = TraceGraph(kernels, host, _steps(events))
    syncs = [e for e in events if e.get("cat") == "cuda_sync"
             and "wait_on_cuda_event_record_corr_id" in (e.get("args") or {})]
    if syncs:
        graph.event_deps = _event_deps(syncs, streams)
    else:
        graph.inferred_deps = _inferred_deps(streams)
    return graph


def _steps(events: list[dict]) -> list[tuple[float, float]]:
    """Recorded step windows on the host: ProfilerStep#N annotations when the profiler schedule
    wrote them; otherwise the windows between the ends of consecutive optimizer zero_grad (else
    step) annotations."""
    marks = sorted((e for e in events if str(e.get("name", "")).startswith("ProfilerStep#")), key=lambda e: e["ts"])
    if marks:
        return [(e["ts"] * 1e-6, (e["ts"] + e.get("dur", 0)) * 1e-6) for e in marks]
    host = [e for e in events if e.get("cat") in ("user_annotation", "cpu_op") or e.get("cat") in HOST_CATS]
    for prefix in ("Optimizer.zero_grad", "Optimizer.step"):
        ends = sorted((e["ts"] + e.get("dur", 0)) * 1e-6 for e in host if e.get("cat") == "user_annotation"
                      and str(e.get("name", "")).startswith(prefix))
        if len(ends) >= 2:
            # The window before the first zero_grad starts wherever the profiler started, not at a
            # step boundary: only the windows between consecutive zero_grads are whole steps.
            return list(zip(ends[:-1], ends[1:]))
    return []


def _event_deps(syncs: list[dict], streams: dict) -> int:
    """Stream Wait Event: the waiting stream's first kernel launched after the wait depends on the
    last kernel the recorded stream got before the cudaEventRecord. Correlation ids grow in host
    call order, so they order launches, records and waits without relying on clocks."""
    n = 0
    for e in syncs:
        args = e["args"]
        rec, wait = args["wait_on_cuda_event_record_corr_id"], args.get("correlation")
        pid = e.get("pid")
        src = streams.get((pid, args.get("wait_on_stream")))
        dst = streams.get((pid, args.get("stream", e.get("tid"))))
        if rec is None or wait is None or not src or not dst:
            continue
        before = [k for k in src if k.correlation is not None and k.correlation < rec]
        after = [k for k in dst if k.correlation is not None and k.correlation > wait]
        if before and after:
            after[0].deps.append(before[-1].index)
            n += 1
    return n


def _inferred_deps(streams: dict) -> int:
    """Cross-stream waits read off the timing (see module doc); kernels of one device only."""
    n = 0
    ends: dict = {}
    for s, ks in streams.items():
        ends.setdefault(s[0], []).extend((k.end_s, k.index, s) for k in ks)
    for pid in ends:
        ends[pid].sort()
    for s, ks in streams.items():
        pool = ends[s[0]]
        keys = [x[0] for x in pool]
        for i, k in enumerate(ks):
            ready = max(ks[i - 1].end_s if i else -1.0, k.launch_s if k.launch_s is not None else -1.0)
            if k.start_s <= ready + LAUNCH_SLACK_S:
                continue
            j = bisect.bisect_right(keys, k.start_s + 1e-9) - 1
            while j >= 0 and pool[j][2] == s:
                j -= 1
            if j >= 0 and k.start_s - pool[j][0] <= LAUNCH_SLACK_S:
                k.deps.append(pool[j][1])
                n += 1
    return n


@dataclass
class ReplayResult:
    makespan_s: float
    step_times_s: list[float]
    recorded_step_times_s: list[float]
    kernel_end_s: list[float]

    @property
    def step_time_s(self) -> float:
        """Mean replayed step time (the whole makespan when the trace marks no steps)."""
        return sum(self.step_times_s) / len(self.step_times_s) if self.step_times_s else self.makespan_s


def _replay_all(graph: TraceGraph, scale: dict, host_scale: float) -> tuple[list[float], dict, float]:
    """(kernel end times, host call times by index, t0) of one SimPy replay of the whole graph."""
    env = simpy.Environment()
    ks = graph.kernels
    t0 = min([k.start_s for k in ks] + [h.start_s for h in graph.host]) if ks else 0.0
    done = [env.event() for _ in ks]
    launched = [env.event() for _ in ks]
    end_s = [0.0] * len(ks)
    host_at: dict[int, float] = {}
    has_launch = {h.kernel for h in graph.host if h.kernel is not None}
    for k in ks:
        if k.index not in has_launch:
            launched[k.index].succeed()

    def host_proc():
        prev_end = t0
        issued: list[int] = []
        for i, h in enumerate(graph.host):
            gap = max(0.0, h.start_s - (graph.host[i - 1].start_s + graph.host[i - 1].dur_s) if i else h.start_s - t0)
            yield env.timeout(gap * host_scale)
            host_at[i] = env.now
            if h.sync:
                # It waits for what it waited for in the recording: the issued kernels that had
                # finished by the time the call returned (an event sync covers only its stream).
                call_end = h.start_s + h.dur_s
                pending = [done[j] for j in issued if not done[j].processed and ks[j].end_s <= call_end + 1e-9]
                if pending:
                    yield simpy.AllOf(env, pending)
                continue
            if h.kernel is not None:
                issued.append(h.kernel)
                launched[h.kernel].succeed()
            yield env.timeout(h.dur_s * host_scale)
            prev_end = env.now
        return prev_end

    def stream_proc(kernels: list[Kernel]):
        for k in kernels:
            waits = [launched[k.index]] + [done[d] for d in k.deps]
            yield simpy.AllOf(env, waits)
            yield env.timeout(k.dur_s * scale[k.kind])
            end_s[k.index] = env.now
            done[k.index].succeed()

    streams: dict[tuple, list[Kernel]] = {}
    for k in ks:
        streams.setdefault(k.stream, []).append(k)
    env.process(host_proc())
    for s in streams.values():
        env.process(stream_proc(s))
    env.run()
    return end_s, host_at, t0


def window_graph(graph: TraceGraph, a: float, b: float) -> TraceGraph:
    """The host calls issued in [a, b] and the kernels they launched, dependencies outside dropped:
    one step replayed on its own, from an idle device (how calibrate/ times a step: synchronised)."""
    calls = [h for h in graph.host if a <= h.start_s <= b]
    old = [h.kernel for h in calls if h.kernel is not None]
    new_index = {j: n for n, j in enumerate(old)}
    kernels = []
    for j in old:
        k = graph.kernels[j]
        kernels.append(Kernel(new_index[j], k.name, k.kind, k.stream, k.start_s, k.dur_s, k.correlation, k.launch_s,
                              [new_index[d] for d in k.deps if d in new_index]))
    host = [HostCall(h.start_s, h.dur_s, new_index.get(h.kernel) if h.kernel is not None else None, h.sync)
            for h in calls]
    return TraceGraph(kernels, host, [(a, b)])


def replay(graph: TraceGraph, compute_scale: float = 1.0, comm_scale: float = 1.0,
           memcpy_scale: float = 1.0, host_scale: float = 1.0) -> ReplayResult:
    """Replay the graph on SimPy with kernel durations scaled per kind, host gaps by host_scale.

    makespan_s and kernel_end_s come from replaying the whole trace as recorded (steps may
    overlap: the host runs ahead); step_times_s replays each step window on its own, from its first
    host call until the device is idle; recorded_step_times_s is the same span read off the trace.
    """
    scale = {"compute": compute_scale, "comm": comm_scale, "memcpy": memcpy_scale}
    end_s, _, t0 = _replay_all(graph, scale, host_scale)
    steps, recorded = [], []
    for a, b in graph.steps:
        sub = window_graph(graph, a, b)
        if not sub.host:
            continue
        k_end, host_at, s0 = _replay_all(sub, scale, host_scale)
        first = min(host_at.values())
        steps.append(max(k_end + [max(host_at.values())]) - first)
        rec_first = sub.host[0].start_s
        recorded.append(max([k.end_s for k in sub.kernels] + [b]) - rec_first)
    return ReplayResult(max(end_s, default=0.0), steps, recorded, end_s)


def what_if_scales(recorded: GpuSpec, target: GpuSpec) -> tuple[float, float]:
    """(matmul-kernel scale, other-kernel scale) moving compute kernels from `recorded` to `target`:
    dense bf16 FLOP/s ratio for matmul/attention kernels, HBM bandwidth ratio for the rest."""
    return (recorded.flops_per_s("bf16") / target.flops_per_s("bf16"),
            recorded.hbm_bandwidth_bytes_per_s / target.hbm_bandwidth_bytes_per_s)


def scaled_graph(graph: TraceGraph, recorded: GpuSpec, target: GpuSpec) -> TraceGraph:
    """A copy of `graph` whose compute kernels run at `target`'s rates (see what_if_scales)."""
    mm, other = what_if_scales(recorded, target)
    kernels = []
    for k in graph.kernels:
        f = 1.0
        if k.kind == "compute":
            f = mm if any(m in k.name.lower() for m in MATMUL_MARKERS) else other
        kernels.append(Kernel(k.index, k.name, k.kind, k.stream, k.start_s, k.dur_s * f, k.correlation,
                              k.launch_s, list(k.deps)))
    return TraceGraph(kernels, graph.host, graph.steps, graph.inferred_deps, graph.event_deps)
