"""Scheduler: continuous batching over a paged KV cache, one SimPy process, one event per iteration.

Each iteration the scheduler makes room for the decodes' next tokens (preempting the newest
sequence when blocks run out), resumes swapped sequences, admits prefill chunks within the token
budget, prices the batch with the StepTimer and sleeps until the pipeline returns it.

Decode growth is O(1) per iteration however many sequences decode: a sequence that joined decode
at iteration j0 holding t0 tokens needs a new block before iteration i+1 exactly when
(t0 - j0 + i) mod block_size == 0, so the scheduler keeps a count of decoding sequences per
residue (t0 - j0) mod block_size and reads one bucket per iteration. Lengths, blocks and token
counts of a sequence are settled only when it leaves decode.
"""

from __future__ import annotations

import math

from bisect import bisect_left
from collections import OrderedDict, deque

from simcluster.serving.kv_cache import KvCache, blocks_for
from simcluster.serving.sequence import Sequence


class KvCapacityError(ValueError):
    """A request that can never fit the replica's KV cache."""


class Scheduler:
    """One scheduler of a replica (a pipeline-parallel replica has pp of them, vLLM's virtual engines).

    role: 'mixed' (prefill and decode), 'prefill' (hand each sequence off after its first token
    through `on_prefilled(seq, scheduler)`), 'decode' (takes sequences whose KV arrived).
    swap_s_per_block: seconds to copy one block between GPU and host memory.
    """

    def __init__(self, env, replica, index: int, timer, kv: KvCache, batching, pipeline, log, on_finish,
                 role: str = "mixed", on_prefilled=None, swap_s_per_block: float = 0.0):
        self.env, self.replica, self.index, self.timer = env, replica, index, timer
        self.kv, self.batching, self.pipeline, self.log = kv, batching, pipeline, log
        self.on_finish, self.on_prefilled, self.role = on_finish, on_prefilled, role
        self.swap_s_per_block = swap_s_per_block
        self.block_size = kv.block_size
        self.watermark_blocks = int(batching.watermark * kv.total)
        self.unit_tokens = kv.unit_blocks * kv.block_size
        self.waiting: deque[Sequence] = deque()
        self.swapped: deque[Sequence] = deque()
        self.running: OrderedDict[int, Sequence] = OrderedDict()   # admission order
        self.prefilling: list[Sequence] = []
        self.decoding: dict[int, Sequence] = {}
        self.phase = [0] * kv.block_size
        self.finish_at: dict[int, list] = {}
        self.iteration = 0            # decode iterations so far
        self.decode_ctx = 0           # KV tokens of the decoding sequences
        self.outstanding = 0
        self._swap_s = 0.0
        self._preempted = 0
        self._gap_at: list[int] = []      # decreasing stack of decode gaps: index into decode_end_s
        self._gap_s: list[float] = []     # and the gap ending there, s
        self._wake = env.event()
        self.graphs = timer.graph_captures() if hasattr(timer, "graph_captures") else None
        self._visible_s = math.inf     # requests arrived by then can join the batch being scheduled
        self.process = env.process(self.run())

    # -- arrivals and hand-offs -------------------------------------------------------------------
    def submit(self, seq: Sequence) -> None:
        seq.engine = self
        self.waiting.append(seq)
        self.outstanding += 1
        self.wake()

    def wake(self) -> None:
        if not self._wake.triggered:
            self._wake.succeed()

    def release(self, seq: Sequence) -> None:
        """Free the blocks of a sequence handed off to another replica (its KV has been sent)."""
        self.kv.release(seq.blocks)
        self.kv.unpin(seq.refs)
        seq.blocks, seq.refs, seq.shared_blocks = 0, (), 0
        self.wake()

    @property
    def kv_in_use_blocks(self) -> int:
        return self.kv.used - self.kv.evictable

    # -- decode membership ------------------------------------------------------------------------
    def _join(self, seq: Sequence, now: float) -> None:
        """Start decoding after the current iteration (or in it when called while scheduling)."""
        i = self.iteration
        seq.join_iter = i
        self.phase[(seq.tokens - i) % self.block_size] += 1
        self.decode_ctx += seq.tokens
        self.decoding[seq.rid] = seq
        self.finish_at.setdefault(i + seq.output - seq.generated, []).append((seq, seq.epoch))

    def _settle(self, seq: Sequence) -> None:
        """Leave decode: add the tokens of the iterations since joining, log the decode segment."""
        steps = self.iteration - seq.join_iter
        t0 = seq.tokens
        self.phase[(t0 - seq.join_iter) % self.block_size] -= 1
        del self.decoding[seq.rid]
        seq.tokens = t0 + steps
        seq.generated += steps
        self.decode_ctx -= seq.tokens
        seq.blocks = max(seq.blocks, blocks_for(seq.tokens, self.block_size) - seq.shared_blocks)
        if steps:
            # Worst inter-token gap of this decode segment: the first gap (from the token before it
            # joined) and the largest gap between the decode iterations it ran in, a suffix of the
            # log, read off the monotonic stack of gaps (O(log n) per segment, O(1) amortized per
            # iteration; the same answer a range-maximum query over the log gives).
            end_s = self.log.decode_end_s
            j0 = seq.join_iter
            gap = end_s[j0] - seq.join_s
            if steps > 1:
                inner = self._gap_s[bisect_left(self._gap_at, j0 + 1)]
                if inner > gap:
                    gap = inner
            if gap > seq.stall_s:
                seq.stall_s = gap
            seq.join_s = end_s[self.iteration - 1]

    def _join_now(self, seq: Sequence, now: float) -> None:
        """Decode in the iteration being scheduled: room for its next token is taken now."""
        need = blocks_for(seq.tokens + 1, self.block_size) - seq.shared_blocks
        self.kv.allocate(need)
        seq.blocks = need
        if seq.scheduled_s < 0:
            seq.scheduled_s = now
        self.running[seq.rid] = seq
        self._join(seq, now)

    # -- leaving ----------------------------------------------------------------------------------
    def _free(self, seq: Sequence) -> None:
        self.kv.release(seq.blocks)
        self.kv.unpin(seq.refs)
        seq.blocks, seq.refs, seq.shared_blocks = 0, (), 0

    def _finish(self, seq: Sequence, now: float) -> None:
        del self.running[seq.rid]
        self._free(seq)
        seq.generated = seq.output
        self.outstanding -= 1
        self.replica.outstanding -= 1
        self.on_finish(seq, now)

    def _preempt_newest(self) -> None:
        _, seq = self.running.popitem(last=True)
        decoding = seq.rid in self.decoding
        if decoding:
            self._settle(seq)
        else:
            self.prefilling.remove(seq)
        seq.epoch += 1
        seq.preemptions += 1
        self._preempted += 1
        kv = self.kv
        if decoding and self.batching.preemption == "swap":
            n = blocks_for(seq.tokens, self.block_size)
            if kv.swap_total - kv.swap_used >= n:
                self._free(seq)
                kv.swap_used += n
                seq.swapped_blocks = n
                self._swap_s += n * self.swap_s_per_block
                self.swapped.appendleft(seq)
                return
        # Recompute (or swap space is full, as vLLM falls back): prefill prompt + generated again.
        self._free(seq)
        seq.target = seq.prompt + seq.generated
        seq.done = 0
        seq.tokens = 0
        self.waiting.appendleft(seq)

    # -- scheduling -------------------------------------------------------------------------------
    def _make_room_for_decodes(self) -> None:
        kv = self.kv
        while self.decoding:
            need = self.phase[-self.iteration % self.block_size]
            if need <= kv.available:
                kv.allocate(need)
                return
            self._preempt_newest()

    def _swap_in(self, now: float) -> None:
        kv, limit = self.kv, self.batching.max_num_seqs
        while self.swapped and len(self.running) < limit:
            seq = self.swapped[0]
            if kv.available - blocks_for(seq.tokens + 1, self.block_size) < self.watermark_blocks:
                return
            self.swapped.popleft()
            kv.swap_used -= seq.swapped_blocks
            self._swap_s += seq.swapped_blocks * self.swap_s_per_block
            seq.swapped_blocks = 0
            self._join_now(seq, now)

    def _admit(self, budget: int, now: float) -> list:
        """Prefill chunks for this iteration within `budget` new tokens: running prefills first."""
        chunked = self.batching.chunked_prefill
        chunks = []
        for seq in self.prefilling:
            if budget <= 0:
                break
            n = seq.target - seq.done
            if n > budget:
                if not chunked:
                    break
                n = budget
            chunks.append((seq, n))
            budget -= n
        kv, limit, bs = self.kv, self.batching.max_num_seqs, self.block_size
        waiting, running = self.waiting, self.running
        visible_s = self._visible_s
        while waiting and len(running) < limit:
            seq = waiting[0]
            if seq.arrival_s > visible_s:
                break       # async scheduling: this batch was chosen before the request arrived
            if seq.kv_ready:
                if kv.available - blocks_for(seq.tokens + 1, bs) < self.watermark_blocks:
                    break
                waiting.popleft()
                seq.kv_ready = False
                self._join_now(seq, now)
                continue
            if budget <= 0:
                break
            hit = 0
            if self.unit_tokens and seq.hashes is not None:
                hit = min(kv.match(seq.hashes), (seq.target - 1) // self.unit_tokens)
            shared = hit * kv.unit_blocks
            need = blocks_for(seq.target, bs) - shared
            pinned = kv.pinned_evictable(seq.hashes, hit) if hit else 0
            if kv.available - pinned - need < self.watermark_blocks:
                if need + shared > kv.total - self.watermark_blocks:
                    raise KvCapacityError(
                        f"request {seq.rid} needs {need + shared} KV blocks of {bs} tokens; replica "
                        f"{self.replica.name} holds {kv.total} (watermark {self.watermark_blocks})")
                break
            todo = seq.target - hit * self.unit_tokens
            if not chunked and todo > budget and chunks:
                break
            waiting.popleft()
            if hit:
                seq.refs = kv.pin(seq.hashes, hit)
                seq.shared_blocks = shared
            kv.allocate(need)
            seq.blocks = need
            seq.done = hit * self.unit_tokens
            if seq.scheduled_s < 0:
                seq.scheduled_s = now
                seq.cached = seq.done
            running[seq.rid] = seq
            self.prefilling.append(seq)
            n = min(todo, budget) if chunked else todo
            chunks.append((seq, n))
            budget -= n
        return chunks

    def _prefilled(self, seq: Sequence, now: float) -> None:
        """A sequence's prefill finished in the iteration that just ended: it emitted a token."""
        self.prefilling.remove(seq)
        seq.tokens = seq.target
        kv = self.kv
        if self.unit_tokens and seq.hashes is not None:
            units = min(len(seq.hashes), seq.prompt // self.unit_tokens)
            if units > len(seq.refs):
                refs, moved = kv.insert(seq.hashes[:units], len(seq.refs), seq.blocks)
                seq.refs = seq.refs + refs
                seq.shared_blocks += len(refs) * kv.unit_blocks
                seq.blocks -= moved
        seq.generated += 1
        if seq.first_token_s < 0:
            seq.first_token_s = now
        elif now - seq.join_s > seq.stall_s:
            seq.stall_s = now - seq.join_s     # the gap a recompute preemption caused
        seq.join_s = now
        if seq.generated >= seq.output:
            self._finish(seq, now)
        elif self.role == "prefill":
            del self.running[seq.rid]
            self.outstanding -= 1
            self.replica.outstanding -= 1
            self.on_prefilled(seq, self)
        else:
            self._join(seq, now)

    def _capture_s(self, chunks, new: int, n_dec: int) -> float:
        """Graph-capture seconds of this iteration (serving/graphs.py)."""
        i = self.iteration
        longest = max((s.tokens + i - s.join_iter for s in self.decoding.values()), default=0)
        cached = self.decode_ctx
        for s, n in chunks:
            longest = max(longest, s.done + n)
            cached += s.done
        return self.graphs.cost_s(new + n_dec, cached, longest)

    def run(self):
        env, b, timer, log, kv = self.env, self.batching, self.timer, self.log, self.kv
        prefill_first = b.order == "prefill_first"
        single_stage = timer.pp == 1
        step = timer.step
        budget = b.max_batched_tokens
        running, waiting, swapped, prefilling, decoding = (self.running, self.waiting, self.swapped, self.prefilling,
                                                           self.decoding)
        phase, bs, lru = self.phase, self.block_size, kv.lru
        rows, end_s = log.rows, log.decode_end_s
        at, gaps = self._gap_at, self._gap_s
        finish_at = self.finish_at
        lookahead = b.async_scheduling
        last_start = last_end = -1.0
        while True:
            if not running and not waiting and not swapped:
                self._wake = env.event()
                yield self._wake
                continue
            now = env._now
            if lookahead:
                # Back to back, this batch was scheduled when the previous one started; after an
                # idle engine, now.
                self._visible_s = last_start if last_end == now else now
                last_start = now
            chunks = ()
            decode = True
            if prefill_first and (waiting or prefilling):
                chunks = self._admit(budget, now)
                decode = not chunks      # vLLM V0: an iteration with prefills runs no decodes
            if decode:
                if decoding:
                    need = phase[-self.iteration % bs]
                    if need <= kv.total - kv.used:
                        kv.used += need              # the common case: free blocks suffice
                    else:
                        self._make_room_for_decodes()
                if swapped:
                    self._swap_in(now)
                n_dec = len(decoding)
                if not prefill_first and (waiting or prefilling):
                    chunks = self._admit(budget - n_dec, now)
                    n_dec = len(decoding)        # sequences whose KV arrived join at once
            else:
                n_dec = 0
            if not chunks and not n_dec:
                if lookahead and waiting and self._visible_s < now:
                    last_end = -1.0      # the engine found its next batch empty: it schedules anew now
                    continue
                # Nothing can run (blocks held by hand-offs, or swapped sequences wait for room).
                self._wake = env.event()
                yield self._wake
                continue
            if chunks:
                n_pre = len(chunks)
                new = ctx = 0
                pairs = 0.0
                for s, n in chunks:
                    new += n
                    ctx += s.done + n
                    pairs += n * (s.done + (n + 1) / 2.0)
                times, flops, bytes_ = step(n_pre, new, ctx, pairs, n_dec, self.decode_ctx + n_dec)
            else:
                n_pre = new = 0
                times, flops, bytes_ = step(0, 0, 0, 0.0, n_dec, self.decode_ctx + n_dec)
            if self.graphs is not None:
                times = (times[0] + self._capture_s(chunks, new, n_dec),) + tuple(times[1:])
            swap_s = self._swap_s
            if single_stage:
                busy = times[0] + swap_s
                end = now + busy
            else:
                times = (times[0] + swap_s,) + times[1:]
                busy = sum(times) / len(times)
                end = self.pipeline.run(now, times)
            rows.extend((now, end - now, busy, n_pre, new, n_dec, kv.used - len(lru) * kv.unit_blocks,
                         flops, bytes_, swap_s, self._preempted, len(running), len(waiting) + len(swapped)))
            if swap_s or self._preempted:
                self._swap_s = 0.0
                self._preempted = 0
            yield env.timeout(end - now)
            now = env._now
            last_end = now
            if n_dec:
                i = self.iteration = self.iteration + 1
                end_s.append(now)
                if i > 1:
                    gap = now - end_s[-2]
                    while gaps and gaps[-1] <= gap:
                        gaps.pop()
                        at.pop()
                    at.append(i - 1)
                    gaps.append(gap)
                self.decode_ctx += n_dec
                done = finish_at.pop(i, None)
                if done:
                    for seq, epoch in done:
                        if seq.epoch == epoch and seq.rid in decoding:
                            self._settle(seq)
                            self._finish(seq, now)
            for seq, n in chunks:
                seq.done += n
                if seq.done >= seq.target:
                    self._prefilled(seq, now)
