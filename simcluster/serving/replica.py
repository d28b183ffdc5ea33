"""A serving replica: the GPUs of one TP×PP(×EP) model instance, its KV cache and its schedulers.

A replica with pp pipeline stages runs pp schedulers (vLLM's virtual engines), each with 1/pp of
the KV blocks, sharing the stages through one Pipeline, so up to pp batches are in flight. A
request goes to the scheduler with the fewest outstanding requests.
"""

from __future__ import annotations

from simcluster.serving.batching import Batching
from simcluster.serving.iteration_log import IterationLog
from simcluster.serving.kv_cache import KvCache
from simcluster.serving.links import Link
from simcluster.serving.pipeline import Pipeline
from simcluster.serving.scheduler import Scheduler
from simcluster.serving.sequence import Sequence

__all__ = ["Batching", "Replica", "Sequence"]


class Replica:
    """Router-facing view of one replica.

    kv_blocks: KV blocks of the whole replica (per GPU: every GPU holds its share of each block);
    unit_blocks: blocks per prefix-cache entry (0: no prefix caching); swap_blocks: host swap
    space in blocks; swap_s_per_block: host-link time to copy one block; links: (bandwidth of
    NVLink, of NICs) of the whole replica in bytes/s; node: which node it sits in.
    """

    def __init__(self, env, index: int, name: str, timer, batching: Batching, kv_blocks: int, on_finish,
                 role: str = "mixed", on_prefilled=None, unit_blocks: int = 0, swap_blocks: int = 0,
                 swap_s_per_block: float = 0.0, prefix_index: dict | None = None,
                 links_bytes_per_s: tuple[float, float] = (1.0, 1.0), node=None, latencies_s=(0.0, 0.0),
                 group: int = 0):
        self.env, self.index, self.name, self.timer, self.batching = env, index, name, timer, batching
        self.role, self.node, self.group = role, node, group
        self.outstanding = 0
        self.kv_blocks = kv_blocks
        nvlink, nic = links_bytes_per_s
        self.nvl_out, self.nvl_in = Link(f"{name}/nvlink-out", nvlink), Link(f"{name}/nvlink-in", nvlink)
        self.nic_out, self.nic_in = Link(f"{name}/nic-out", nic), Link(f"{name}/nic-in", nic)
        self.intra_latency_s, self.inter_latency_s = latencies_s
        pipeline = Pipeline(timer.pp)
        per_engine = kv_blocks // timer.pp
        self.logs = [IterationLog() for _ in range(timer.pp)]
        self.schedulers = [
            Scheduler(env, self, v, timer,
                      KvCache(per_engine, batching.block_size, unit_blocks, swap_blocks // timer.pp,
                              prefix_index, index),
                      batching, pipeline, self.logs[v], on_finish, role, on_prefilled, swap_s_per_block)
            for v in range(timer.pp)
        ]
        self._single = self.schedulers[0] if timer.pp == 1 else None

    def submit(self, seq: Sequence, counted: bool = False) -> None:
        """Queue `seq` here; counted=True when a router already added it to `outstanding`."""
        seq.replica = self.index
        if not counted:
            self.outstanding += 1
        engine = self._single or min(self.schedulers, key=lambda s: s.outstanding)
        engine.submit(seq)

    @property
    def kv_load(self) -> float:
        """Fraction of KV blocks pinned by sequences (unpinned prefix-cache entries count as free)."""
        return sum(s.kv_in_use_blocks for s in self.schedulers) / max(1, self.kv_blocks)
