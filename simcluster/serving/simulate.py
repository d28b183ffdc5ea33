"""simulate_serving: replay a trace through a cluster of replicas and return flat records."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import simpy

from simcluster.cost.model import CostModel
from simcluster.hardware.gpu import GpuSpec
from simcluster.llm.memory import serving_memory
from simcluster.llm.spec import LlmSpec
from simcluster.serving.replica import Batching, Replica, Sequence
from simcluster.serving.router import DEFAULT_ROUTER, ROUTERS
from simcluster.serving.step import StepTimer


@dataclass(frozen=True)
class ReplicaGroup:
    """`count` identical replicas: one GPU type, one parallel layout, one scheduler."""

    gpu: GpuSpec
    cost: CostModel
    count: int = 1
    tp: int = 1
    pp: int = 1
    ep: int = 1
    batching: Batching = Batching()
    dtype: str = "bf16"
    kv_dtype: str = "bf16"
    gpu_memory_utilization: float = 0.9
    cuda_graphs: bool = True
    cpu_overhead_s: float = 0.0

    @property
    def gpus_per_replica(self) -> int:
        # Expert parallelism spreads experts over the replica's own GPUs (ep <= tp × pp).
        return self.tp * self.pp

    @property
    def price_usd_per_hour(self) -> float:
        return self.count * self.gpus_per_replica * self.gpu.price_usd_per_hour


@dataclass
class ServingResult:
    requests: pd.DataFrame          # one row per completed request
    iterations: pd.DataFrame        # one row per replica iteration
    duration_s: float
    gpu_count: int
    price_usd_per_hour: float
    unfinished: int

    def summary(self, slo: dict | None = None) -> dict:
        from simcluster.serving.metrics import summarize
        busy = self.iterations.groupby("replica")["duration_s"].sum() if len(self.iterations) else pd.Series(dtype=float)
        stats = {"gpu_time_utilisation": float(busy.sum() / (self.duration_s * max(1, busy.size))) if self.duration_s > 0 else 0.0}
        out = summarize(self.requests, self.duration_s, slo, self.gpu_count, self.price_usd_per_hour, stats)
        out["unfinished"] = self.unfinished
        return out


def build_replicas(env, llm: LlmSpec, groups: list[ReplicaGroup], on_finish) -> list[Replica]:
    replicas = []
    for gi, g in enumerate(groups):
        mem = serving_memory(llm, g.gpu.memory_bytes, g.tp, g.pp, g.ep, g.dtype, g.kv_dtype,
                             g.gpu_memory_utilization, g.batching.max_batched_tokens)
        if not mem.fits:
            raise ValueError(f"{llm.name} does not fit on {g.gpu.name} with TP={g.tp} PP={g.pp}: "
                             f"weights {mem.weight_bytes / 2**30:.1f} GiB of {mem.usable_bytes / 2**30:.1f} GiB usable")
        # Every pipeline stage holds its layers' KV; capacity in tokens is the per-GPU figure.
        timer = StepTimer(llm, g.cost, g.tp, g.pp, g.ep, g.dtype, g.kv_dtype, g.cuda_graphs, g.cpu_overhead_s)
        for i in range(g.count):
            replicas.append(Replica(env, f"{g.gpu.name}/tp{g.tp}pp{g.pp}/{gi}.{i}", timer,
                                    mem.kv_capacity_tokens, g.batching, on_finish))
    return replicas


def simulate_serving(llm: LlmSpec, trace, groups: list[ReplicaGroup], router: str = DEFAULT_ROUTER,
                     until_s: float | None = None) -> ServingResult:
    """Replay `trace` (a workload.Trace) on the replica groups; deterministic for a given input."""
    env = simpy.Environment()
    finished: list[Sequence] = []
    replicas = build_replicas(env, llm, groups, finished.append)
    pick = ROUTERS[router]()
    arrival = trace.arrival_s
    prompt = trace.prompt_tokens
    output = trace.output_tokens
    sequences = []

    def arrivals():
        for i in range(len(arrival)):
            t = float(arrival[i])
            if t > env.now:
                yield env.timeout(t - env.now)
            seq = Sequence(i, t, int(prompt[i]), int(output[i]))
            sequences.append(seq)
            pick(replicas, seq).submit(seq)

    env.process(arrivals())
    env.run(until=until_s)
    duration = env.now
    records = _request_frame(finished)
    iterations = _iteration_frame(replicas)
    gpus = sum(g.count * g.gpus_per_replica for g in groups)
    price = sum(g.price_usd_per_hour for g in groups)
    return ServingResult(records, iterations, duration, gpus, price, len(sequences) - len(finished))


def _request_frame(finished: list[Sequence]) -> pd.DataFrame:
    finished = sorted(finished, key=lambda s: s.rid)
    return pd.DataFrame({
        "request_id": np.array([s.rid for s in finished], dtype=np.int64),
        "replica": [s.replica for s in finished],
        "arrival_s": np.array([s.arrival_s for s in finished]),
        "prompt_tokens": np.array([s.prompt for s in finished], dtype=np.int64),
        "output_tokens": np.array([s.output for s in finished], dtype=np.int64),
        "cached_tokens": np.array([s.cached for s in finished], dtype=np.int64),
        "scheduled_s": np.array([s.scheduled_s for s in finished]),
        "first_token_s": np.array([s.first_token_s for s in finished]),
        "finish_s": np.array([s.finish_s for s in finished]),
        "preemptions": np.array([s.preemptions for s in finished], dtype=np.int64),
    })


def _iteration_frame(replicas: list[Replica]) -> pd.DataFrame:
    frames = []
    cols = ["start_s", "duration_s", "n_prefill", "prefill_tokens", "n_decode", "kv_used_tokens"]
    for r in replicas:
        f = pd.DataFrame(r.log, columns=cols)
        f.insert(0, "replica", r.name)
        f["kv_capacity_tokens"] = r.capacity
        frames.append(f)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["replica", *cols])
