"""Sequence: one request's state inside a serving replica.

Token bookkeeping (DESIGN principle 1): a decoding sequence is not touched per iteration. It
remembers the decode iteration it joined at (`join_iter`) and how many KV tokens it held then
(`tokens`); its current length follows from the replica's iteration counter when it is settled
(finished, preempted, handed off).
"""

from __future__ import annotations


class Sequence:
    """State of one request. `target` is how many tokens must be in the KV cache before the next
    token can be sampled (prompt + generated tokens): the prompt at first, prompt + generated after
    a recompute preemption. `done` counts those already computed (or served by the prefix cache)."""

    __slots__ = ("rid", "arrival_s", "prompt", "output", "hashes", "target", "done", "generated",
                 "tokens", "blocks", "refs", "shared_blocks", "join_iter", "join_s", "epoch",
                 "preemptions", "cached", "scheduled_s", "first_token_s", "replica", "engine",
                 "prefill_replica", "kv_ready", "swapped_blocks", "stall_s", "transfer_s")

    def __init__(self, rid: int, arrival_s: float, prompt: int, output: int, hashes=None):
        self.rid, self.arrival_s, self.prompt, self.output = rid, arrival_s, prompt, output
        self.hashes = hashes          # prefix-cache keys of the prompt's whole cache units, or None
        self.target = prompt
        self.done = 0
        self.generated = 0
        self.tokens = 0               # KV tokens held (settled value while decoding)
        self.blocks = 0               # private KV blocks held
        self.refs = ()                # prefix-cache keys this sequence pins
        self.shared_blocks = 0        # blocks of those pinned keys
        self.join_iter = 0
        self.join_s = 0.0             # time of the token emitted just before it (re)joined decode
        self.epoch = 0
        self.preemptions = 0
        self.cached = 0               # prompt tokens served from the prefix cache (first admission)
        self.scheduled_s = -1.0
        self.first_token_s = -1.0
        self.replica = -1             # index of the replica that finished it
        self.engine = None            # the Scheduler holding it now
        self.prefill_replica = -1
        self.kv_ready = False         # KV arrived from a prefill replica: decode without prefill
        self.swapped_blocks = 0       # blocks parked in host memory by a swap preemption
        self.stall_s = 0.0            # longest gap across a preemption or hand-off
        self.transfer_s = 0.0         # KV transfer time from the prefill replica
