"""A serving replica as a SimPy process: continuous batching over a KV cache of fixed capacity.

One event per iteration (DESIGN principle 1): each iteration the replica picks its batch, the
StepTimer prices it, and the process sleeps that long. Per-sequence work is done only when a
sequence changes state (admitted, finishes prefill, finishes, is preempted), never per token.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import simpy

from simcluster.serving.step import StepTimer


@dataclass(frozen=True)
class Batching:
    """Scheduler limits of one replica (vLLM-style names)."""

    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    chunked_prefill: bool = True
    order: str = "decode_first"          # 'decode_first' (Sarathi/vLLM V1) or 'prefill_first' (vLLM V0)
    preemption: str = "recompute"


class Sequence:
    __slots__ = ("rid", "arrival_s", "prompt", "output", "target", "done", "generated", "kv",
                 "scheduled_s", "first_token_s", "finish_s", "preemptions", "epoch", "replica",
                 "join_iter", "cached")

    def __init__(self, rid: int, arrival_s: float, prompt: int, output: int):
        self.rid, self.arrival_s, self.prompt, self.output = rid, arrival_s, prompt, output
        self.target = prompt        # tokens to (re)compute before the next token can be emitted
        self.done = 0               # of target, already in the KV cache
        self.generated = 0
        self.kv = 0                 # tokens held in this replica's KV cache
        self.scheduled_s = -1.0
        self.first_token_s = -1.0
        self.finish_s = -1.0
        self.preemptions = 0
        self.epoch = 0
        self.replica = ""
        self.join_iter = 0          # replica iteration at which it started decoding
        self.cached = 0             # prompt tokens served from a prefix cache


class Replica:
    """Continuous batching with a token-granular KV-cache limit and recompute preemption."""

    def __init__(self, env: simpy.Environment, name: str, timer: StepTimer, kv_capacity_tokens: int,
                 batching: Batching, on_finish):
        if kv_capacity_tokens <= 0:
            raise ValueError(f"replica {name}: no memory left for the KV cache")
        self.env, self.name, self.timer = env, name, timer
        self.capacity = kv_capacity_tokens
        self.batching = batching
        self.on_finish = on_finish
        self.waiting: deque[Sequence] = deque()
        self.running: OrderedDict[int, Sequence] = OrderedDict()   # admission order
        self.prefilling: list[Sequence] = []
        self.decoding: dict[int, Sequence] = {}
        self.finish_at: dict[int, list[Sequence]] = {}
        self.kv_used = 0
        self.decode_ctx = 0
        self.iteration = 0
        self.busy_s = 0.0
        self.log: list[tuple] = []   # (start_s, duration_s, n_prefill, prefill_tokens, n_decode, kv_used)
        self.outstanding = 0
        self._wake = env.event()
        self.process = env.process(self.run())

    # -- arrivals ---------------------------------------------------------------------------------
    def submit(self, seq: Sequence) -> None:
        seq.replica = self.name
        self.waiting.append(seq)
        self.outstanding += 1
        if not self._wake.triggered:
            self._wake.succeed()

    @property
    def kv_load(self) -> float:
        return self.kv_used / self.capacity

    # -- scheduling -------------------------------------------------------------------------------
    def _preempt_last(self) -> None:
        _, seq = self.running.popitem(last=True)
        if seq.rid in self.decoding:
            self._leave_decode(seq)
        else:
            self.prefilling.remove(seq)
        self.kv_used -= seq.kv
        seq.kv = 0
        seq.done = 0
        seq.target = seq.prompt + seq.generated   # recompute: re-prefill prompt and what it generated
        seq.epoch += 1
        seq.preemptions += 1
        self.waiting.appendleft(seq)

    def _admit(self, budget: int, chunked: bool) -> list[tuple[Sequence, int]]:
        """Pick prefill chunks for this iteration within `budget` new tokens."""
        chunks = []
        for seq in self.prefilling:
            if budget <= 0:
                break
            n = min(seq.target - seq.done, budget)
            chunks.append((seq, n))
            budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.batching.max_num_seqs:
            seq = self.waiting[0]
            need = seq.target + 1
            if self.kv_used + need > self.capacity:
                if not self.running and need > self.capacity:
                    raise ValueError(f"request {seq.rid} needs {need} KV tokens; replica {self.name} holds {self.capacity}")
                break
            if not chunked and seq.target > budget and chunks:
                break
            self.waiting.popleft()
            self.kv_used += seq.target   # reserve the whole prompt at admission
            seq.kv = seq.target
            if seq.scheduled_s < 0:
                seq.scheduled_s = self.env.now
            self.running[seq.rid] = seq
            self.prefilling.append(seq)
            n = min(seq.target, budget) if chunked else seq.target
            chunks.append((seq, n))
            budget -= n
        return chunks

    def _leave_decode(self, seq: Sequence) -> None:
        """Settle the per-token growth that was not tracked per iteration, and drop from decode."""
        steps = self.iteration - seq.join_iter
        seq.kv += steps
        seq.generated += steps
        del self.decoding[seq.rid]
        self.decode_ctx -= seq.kv

    def run(self):
        env = self.env
        b = self.batching
        while True:
            if not self.running and not self.waiting:
                self._wake = env.event()
                yield self._wake
                continue
            # Each decoding sequence appends one token: make room first, preempting the newest.
            while self.decoding and self.kv_used + len(self.decoding) > self.capacity:
                self._preempt_last()
            n_dec = len(self.decoding)
            if b.order == "prefill_first" and (self.waiting or self.prefilling):
                chunks = self._admit(b.max_batched_tokens, b.chunked_prefill)
                if chunks:
                    n_dec = 0   # vLLM V0 default: a prefill iteration carries no decodes
            else:
                chunks = self._admit(b.max_batched_tokens - n_dec, b.chunked_prefill)
            if not chunks and not n_dec:
                # Nothing fits (KV full of sequences that are all prefilling): wait for a change.
                self._wake = env.event()
                yield self._wake
                continue
            new = 0
            ctx = 0
            pairs = 0.0
            for s, n in chunks:
                new += n
                ctx += s.done + n
                pairs += n * (s.done + (n + 1) / 2.0)
            dec_ctx = self.decode_ctx + n_dec
            dt = self.timer.time_s(len(chunks), new, ctx, pairs, n_dec, dec_ctx if n_dec else 0)
            start = env.now
            yield env.timeout(dt)
            now = env.now
            self.busy_s += dt
            self.log.append((start, dt, len(chunks), new, n_dec, self.kv_used))
            if n_dec:
                self.iteration += 1
                self.kv_used += n_dec
                self.decode_ctx += n_dec
                for seq, epoch in self.finish_at.pop(self.iteration, ()):
                    if seq.epoch == epoch and seq.rid in self.decoding:
                        self._leave_decode(seq)
                        self._finish(seq, now)
            for seq, n in chunks:
                seq.done += n
                if seq.done < seq.target:
                    continue
                self.prefilling.remove(seq)
                seq.generated += 1
                seq.kv += 1 if seq.generated < seq.output else 0
                if seq.first_token_s < 0:
                    seq.first_token_s = now
                if seq.generated >= seq.output:
                    self._finish(seq, now)
                    continue
                self.kv_used += 1
                seq.join_iter = self.iteration
                self.decoding[seq.rid] = seq
                self.decode_ctx += seq.kv
                # It emits one token per decode iteration from now on unless preempted.
                self.finish_at.setdefault(self.iteration + seq.output - seq.generated, []).append((seq, seq.epoch))

    def _finish(self, seq: Sequence, now: float) -> None:
        del self.running[seq.rid]
        self.kv_used -= seq.kv
        seq.kv = 0
        seq.finish_s = now
        seq.generated = seq.output
        self.outstanding -= 1
        self.on_finish(seq)
