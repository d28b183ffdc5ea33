"""Batching: the scheduler policy of one replica, with vLLM-style names and defaults.

Every field is a policy a scenario file can select (see scenario.ReplicaSpec):
- continuous batching limits: max_num_seqs, max_batched_tokens (per-iteration token budget);
- chunked_prefill: split prompts across iterations within the budget (Sarathi-Serve, OSDI'24);
- order: 'decode_first' (running decodes first, then prefill chunks fill the budget; vLLM V1,
  Sarathi) or 'prefill_first' (an iteration with schedulable prefills runs no decodes; vLLM V0);
- preemption: 'recompute' (drop the KV, prefill prompt + generated tokens again) or 'swap'
  (copy the KV to host memory over the host link, copy it back later; vLLM V0);
- paged KV: block_size tokens per block, watermark = fraction of blocks admission keeps free;
- prefix_caching: reuse cached prompt blocks by hash, LRU eviction of unpinned ones;
- async_scheduling: the next batch is scheduled while the current one runs (transformers' async
  batching, vLLM's async scheduling): a request that arrives during a busy iteration can join
  the iteration after next at the earliest; decodes continue back to back.
"""

from __future__ import annotations

from dataclasses import dataclass

ORDERS = ("decode_first", "prefill_first")
PREEMPTIONS = ("recompute", "swap")


class BatchingError(ValueError):
    """A batching policy that cannot run; the message names the field."""


@dataclass(frozen=True)
class Batching:
    """Scheduler policy of one replica; see the module doc for each field."""

    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    chunked_prefill: bool = True
    order: str = "decode_first"
    preemption: str = "recompute"
    block_size: int = 16
    watermark: float = 0.01
    prefix_caching: bool = False
    async_scheduling: bool = False

    def __post_init__(self):
        if self.order not in ORDERS:
            raise BatchingError(f"batching.order is {self.order!r}; expected one of {list(ORDERS)}")
        if self.preemption not in PREEMPTIONS:
            raise BatchingError(f"batching.preemption is {self.preemption!r}; expected one of {list(PREEMPTIONS)}")
        for name in ("max_num_seqs", "max_batched_tokens", "block_size"):
            if int(getattr(self, name)) < 1:
                raise BatchingError(f"batching.{name} is {getattr(self, name)!r}; expected a positive integer")
        if not 0 <= self.watermark < 1:
            raise BatchingError(f"batching.watermark is {self.watermark!r}; expected a fraction in [0, 1)")
