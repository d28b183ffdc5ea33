"""simulate_serving: replay a trace through a cluster of replicas and return flat records."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import simpy

from simcluster.cost.model import CostModel
from simcluster.hardware.gpu import GpuSpec
from simcluster.llm.memory import serving_memory
from simcluster.llm.ops import kv_bytes_per_token
from simcluster.llm.spec import LlmSpec
from simcluster.serving.batching import Batching
from simcluster.serving.disaggregation import Handoff
from simcluster.serving.links import LinkNetwork
from simcluster.serving.records import RequestRecords, iteration_frame, iteration_stats, replica_frame
from simcluster.serving.replica import Replica
from simcluster.serving.router import DEFAULT_ROUTER, ROUTERS
from simcluster.serving.sequence import Sequence
from simcluster.serving.step import StepTimer

ROLES = ("mixed", "prefill", "decode")
GIB = 2**30


class ClusterError(ValueError):
    """Replica groups that cannot form a cluster (roles, memory, block sizes); one line naming the group."""


@dataclass(frozen=True)
class ReplicaGroup:
    """`count` identical replicas: one GPU type, one parallel layout, one scheduler policy.

    role: 'mixed' (default), or 'prefill' / 'decode' for disaggregated pools; swap_space_bytes:
    host memory per GPU for swapped-out KV (vLLM's default is 4 GiB); host_to_device_bandwidth
    _bytes_per_s: the GPU's host link (0: the GPU's default node from the catalog); attention_packing:
    'varlen' or 'packed' (one masked attention over the whole batch), see serving/step.py;
    graph_padding_tokens: (query, cached-KV) token multiples a CUDA-graph engine pads each batch to
    ((0, 0): none; transformers' continuous batching with graphs: its q/kv padding interval sizes);
    graph_capture_s: seconds the first batch of each padded shape pays to capture its graph, per
    one of graph_io_sets buffer sets (0: graphs captured at start-up), see serving/graphs.py.
    """

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
    role: str = "mixed"
    swap_space_bytes: float = 4 * GIB
    host_to_device_bandwidth_bytes_per_s: float = 0.0
    moe_imbalance: float = 1.0
    attention_packing: str = "varlen"
    graph_padding_tokens: tuple[int, int] = (0, 0)
    graph_capture_s: float = 0.0
    graph_io_sets: int = 1

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
    iterations: pd.DataFrame        # one row per scheduler iteration
    duration_s: float
    gpu_count: int
    price_usd_per_hour: float
    unfinished: int
    replicas: pd.DataFrame = field(default_factory=pd.DataFrame)   # one row per replica
    kv_transfer_bytes: float = 0.0

    def iteration_stats(self) -> dict:
        return iteration_stats(self.iterations, self.replicas, self.duration_s)

    def summary(self, slo: dict | None = None) -> dict:
        from simcluster.serving.metrics import summarize
        stats = self.iteration_stats()
        stats["kv_transfer_bytes"] = self.kv_transfer_bytes
        if "preemptions" in self.iterations:
            stats["preemption_events"] = int(self.iterations["preemptions"].sum())
        out = summarize(self.requests, self.duration_s, slo, self.gpu_count, self.price_usd_per_hour, stats,
                        unfinished=self.unfinished)
        out["unfinished"] = self.unfinished
        return out


def _host_bandwidth(g: ReplicaGroup) -> float:
    if g.host_to_device_bandwidth_bytes_per_s > 0:
        return g.host_to_device_bandwidth_bytes_per_s
    from simcluster.hardware.node import default_node_for
    return default_node_for(g.gpu.name).host_to_device_bandwidth_bytes_per_s


def _check_roles(groups: list[ReplicaGroup]) -> None:
    roles = [g.role for g in groups]
    for i, r in enumerate(roles):
        if r not in ROLES:
            raise ClusterError(f"replica group {i}: role {r!r}; expected one of {list(ROLES)}")
    if ("prefill" in roles) != ("decode" in roles):
        raise ClusterError("replica groups: a disaggregated cluster needs both a 'prefill' and a 'decode' group")
    if "prefill" in roles and "mixed" in roles:
        raise ClusterError("replica groups: mix 'mixed' groups with 'prefill'/'decode' pools is not supported; "
                           "give every group role prefill or decode")


def build_replicas(env, llm: LlmSpec, groups: list[ReplicaGroup], on_finish, trace=None, on_prefilled=None,
                   prefix_index: dict | None = None) -> list[Replica]:
    """Replicas of every group, in group order, packed onto nodes of their GPU type."""
    replicas: list[Replica] = []
    pool_index = {"front": 0, "decode": 0}
    node_fill: dict[str, list[int]] = {}     # gpu -> [node index, GPUs used in it]
    for gi, g in enumerate(groups):
        b = g.batching
        mem = serving_memory(llm, g.gpu.memory_bytes, g.tp, g.pp, g.ep, g.dtype, g.kv_dtype,
                             g.gpu_memory_utilization, b.max_batched_tokens)
        if not mem.fits:
            raise ClusterError(f"replica group {gi}: {llm.name} does not fit on {g.gpu.name} with TP={g.tp} PP={g.pp}: "
                               f"weights {mem.weight_bytes / GIB:.1f} GiB of {mem.usable_bytes / GIB:.1f} GiB usable")
        block_bytes = b.block_size * mem.kv_bytes_per_token       # per GPU
        kv_blocks = int(mem.kv_cache_bytes // block_bytes)
        unit_blocks = 0
        if b.prefix_caching and trace is not None and trace.hash_ids is not None:
            if trace.block_tokens % b.block_size:
                raise ClusterError(f"replica group {gi}: block_size {b.block_size} does not divide the trace's "
                                   f"{trace.block_tokens}-token hash blocks; expected a divisor")
            unit_blocks = trace.block_tokens // b.block_size
        swap_blocks = int(g.swap_space_bytes // block_bytes) if b.preemption == "swap" else 0
        swap_s_per_block = block_bytes / _host_bandwidth(g) if b.preemption == "swap" else 0.0
        timer = StepTimer(llm, g.cost, g.tp, g.pp, g.ep, g.dtype, g.kv_dtype, g.cuda_graphs, g.cpu_overhead_s,
                          g.moe_imbalance, g.attention_packing, g.graph_padding_tokens, g.graph_capture_s,
                          g.graph_io_sets)
        links = g.cost.links
        per_node = links.gpus_per_node
        pool = "decode" if g.role == "decode" else "front"
        for i in range(g.count):
            fill = node_fill.setdefault(g.gpu.name, [-1, per_node])
            if fill[1] + g.gpus_per_replica > per_node:
                fill[0], fill[1] = fill[0] + 1, 0
            fill[1] += g.gpus_per_replica
            tag = "" if g.role == "mixed" else g.role[0].upper() + ":"
            layout = f"tp{g.tp}pp{g.pp}" + (f"ep{g.ep}" if g.ep > 1 else "")
            r = Replica(env, pool_index[pool], f"{tag}{g.gpu.name}/{layout}/{gi}.{i}", timer, b, kv_blocks, on_finish,
                        g.role, on_prefilled, unit_blocks, swap_blocks, swap_s_per_block,
                        prefix_index if pool == "front" else None,
                        (g.gpus_per_replica * links.intra_bandwidth_bytes_per_s,
                         g.gpus_per_replica * links.inter_bandwidth_bytes_per_s),
                        (g.gpu.name, fill[0]), (links.intra_latency_s, links.inter_latency_s), gi)
            pool_index[pool] += 1
            replicas.append(r)
    return replicas


def simulate_serving(llm: LlmSpec, trace, groups: list[ReplicaGroup], router: str = DEFAULT_ROUTER,
                     until_s: float | None = None) -> ServingResult:
    """Replay `trace` (a workload.Trace) on the replica groups; deterministic for a given input.

    >>> from simcluster.cost import cost_model_for
    >>> from simcluster.hardware.gpu import load_gpu
    >>> from simcluster.llm.spec import load_llm
    >>> from simcluster.workload import Trace
    >>> import numpy as np
    >>> t = Trace("demo", np.array([0.0, 0.1]), np.array([512, 256]), np.array([16, 8]))
    >>> g = ReplicaGroup(load_gpu("h100-sxm"), cost_model_for("h100-sxm", "roofline"))
    >>> len(simulate_serving(load_llm("llama-3.1-8b"), t, [g]).requests)
    2
    """
    if router not in ROUTERS:
        raise ClusterError(f"router {router!r}; expected one of {list(ROUTERS)}")
    _check_roles(groups)
    env = simpy.Environment()
    n = len(trace)
    records = RequestRecords(n)
    prefix_index: dict = {}
    disaggregated = any(g.role == "prefill" for g in groups)
    handoff = None
    if disaggregated:
        # The decode pool is picked by load; prefix affinity means nothing there.
        decode_router = "least_outstanding" if router == "prefix_affinity" else router
        handoff = Handoff(env, [], ROUTERS[decode_router](), LinkNetwork(env),
                          kv_bytes_per_token(llm, 1, 1, groups[0].kv_dtype))
    replicas = build_replicas(env, llm, groups, records, trace, handoff,
                              prefix_index if router == "prefix_affinity" else None)
    front = [r for r in replicas if r.role != "decode"]
    if handoff is not None:
        handoff.decode_replicas.extend(r for r in replicas if r.role == "decode")
    pick = ROUTERS[router](prefix_index=prefix_index)
    arrival = trace.arrival_s.tolist()
    prompt = trace.prompt_tokens.tolist()
    output = trace.output_tokens.tolist()
    keyed = trace.hash_ids is not None and (router == "prefix_affinity" or any(g.batching.prefix_caching for g in groups))
    hashes = trace.hash_ids

    def arrivals():
        for i in range(n):
            t = arrival[i]
            if t > env.now:
                yield env.timeout(t - env.now)
            seq = Sequence(i, t, prompt[i], output[i], tuple(hashes[i].tolist()) if keyed else None)
            pick(front, seq).submit(seq)

    env.process(arrivals())
    env.run(until=until_s)
    names = {"front": [r.name for r in front], "decode": [r.name for r in replicas if r.role == "decode"]}
    requests = _named(records, trace, names, disaggregated)
    gpus = sum(g.count * g.gpus_per_replica for g in groups)
    price = sum(g.price_usd_per_hour for g in groups)
    iterations = iteration_frame(replicas)
    duration = env.now
    if until_s is not None and records.count == n and len(requests):
        # Everything finished before the horizon: the run ends with its last event, not at the
        # horizon, or throughput and utilisation would be diluted by idle time after the work.
        ends = [float(requests["finish_s"].max())]
        if len(iterations):
            ends.append(float((iterations["start_s"] + iterations["duration_s"]).max()))
        duration = max(ends)
    return ServingResult(requests, iterations, duration, gpus, price, n - records.count,
                         replica_frame(replicas, groups), handoff.network.bytes_sent if handoff else 0.0)


def _named(records: RequestRecords, trace, names: dict, disaggregated: bool) -> pd.DataFrame:
    """Request rows with replica names: the decode pool's for sequences that reached it."""
    if not disaggregated:
        return records.frame(trace, names["front"])
    frame = records.frame(trace, names["front"] + names["decode"])
    # Replica indices are per pool: a handed-off request's replica is in the decode pool.
    idx = frame["request_id"].to_numpy()
    handed = records.column("handed")[idx].astype(bool)
    replica = records.column("replica")[idx]
    n_front = len(names["front"])
    frame["prefill_replica"] = pd.Categorical.from_codes(records.column("prefill_replica")[idx],
                                                         categories=names["front"])
    codes = np.where(handed, n_front + replica, replica)
    frame["replica"] = pd.Categorical.from_codes(codes, categories=names["front"] + names["decode"])
    return frame
