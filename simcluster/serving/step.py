"""StepTimer: the duration, FLOPs and bytes of one serving iteration, fast enough for the event loop.

The ops outside the attention core depend only on the new tokens (body) or on the sequences that
emit logits (final norm, LM head, sampling), so each part is cached by that one number. Attention
depends on batch aggregates; with the roofline kernels it is evaluated in closed form from the
linear FLOP/byte coefficients of the op formulas (exact, see `_Linear`), otherwise by the cost model.
"""

from __future__ import annotations

import math

from simcluster.cost.model import CostModel
from simcluster.cost.roofline import RooflineKernels
from simcluster.llm.ops import Op, decode_attention_op, linear_ops, prefill_attention_op, stage_layers
from simcluster.llm.spec import LlmSpec
from simcluster.serving.graphs import GraphCaptures

LOGIT_OPS = frozenset({"final_norm", "lm_head", "sampling"})
EXACT_TOKENS = 256          # token counts priced exactly; above, interpolated on a geometric grid
GRID_PER_OCTAVE = 32
ATTENTION_GRID_PER_OCTAVE = 64   # memo grid of attention aggregates for non-closed-form kernels
# How an engine's attention covers one iteration's batch:
#   varlen: each sequence's queries attend to its own keys only (flash/paged varlen kernels: vLLM,
#           SGLang, TensorRT-LLM);
#   packed: one attention over the whole packed batch, every query against every key read in the
#           iteration, the other sequences masked out (block-diagonal mask, as transformers'
#           `paged|sdpa` and `paged|eager` run it): FLOPs grow with (all queries) x (all keys).
ATTENTION_PACKINGS = ("varlen", "packed")


def _round_up(n: int, interval: int) -> int:
    """n rounded up to a multiple of `interval` (0: unchanged); an empty count pads to one interval,
    as transformers' `pad_to_interval` does (generation/continuous_batching/utils.py)."""
    if interval <= 0:
        return n
    return max(1, -(-n // interval)) * interval


def _grid_neighbours(tokens: int) -> tuple[int, int]:
    """The two integer points of the geometric grid above EXACT_TOKENS that bracket `tokens`."""
    k = math.floor(GRID_PER_OCTAVE * math.log2(tokens / EXACT_TOKENS))
    lo = int(EXACT_TOKENS * 2 ** (k / GRID_PER_OCTAVE))
    hi = int(math.ceil(EXACT_TOKENS * 2 ** ((k + 1) / GRID_PER_OCTAVE)))
    lo, hi = min(lo, tokens), max(hi, tokens)
    return (lo, hi) if hi > lo else (tokens - 1, tokens)


def _snap(x: float) -> float:
    """x rounded to the geometric grid of ATTENTION_GRID_PER_OCTAVE points per doubling (0 stays 0)."""
    if x <= 0:
        return 0.0
    return 2.0 ** (round(ATTENTION_GRID_PER_OCTAVE * math.log2(x)) / ATTENTION_GRID_PER_OCTAVE)


class _Linear:
    """Roofline time of an attention op per layer, from FLOPs/bytes linear in the batch aggregates."""

    def __init__(self, flops_per_unit: tuple, bytes_per_unit: tuple, flops_per_s: float, bytes_per_s: float,
                 min_kernel_s: float, gap_s: float):
        self.f, self.b = flops_per_unit, bytes_per_unit
        self.flops_per_s, self.bytes_per_s = flops_per_s, bytes_per_s
        self.min_kernel_s, self.gap_s = min_kernel_s, gap_s
        self.floor_s = max(min_kernel_s, gap_s)

    def per_layer(self, x: float, y: float, z: float) -> tuple[float, float, float]:
        """(seconds incl. launch gap, FLOPs, bytes) of one layer's op for aggregates (x, y, z)."""
        f = self.f[0] * x + self.f[1] * y + self.f[2] * z
        b = self.b[0] * x + self.b[1] * y + self.b[2] * z
        t = max(f / self.flops_per_s, b / self.bytes_per_s, self.min_kernel_s, self.gap_s)
        return t, f, b


class StepTimer:
    """Iteration cost of one TP×PP(×EP) replica.

    `time_s` is one batch's latency through the whole pipeline (sum of stages); `stages` gives
    each stage's time so the replica can overlap micro-batches (throughput set by the slowest).
    """

    def __init__(self, llm: LlmSpec, cost: CostModel, tp: int = 1, pp: int = 1, ep: int = 1,
                 dtype: str = "bf16", kv_dtype: str = "bf16", cuda_graphs: bool = True,
                 cpu_overhead_s: float = 0.0, moe_imbalance: float = 1.0, attention_packing: str = "varlen",
                 padding_tokens: tuple[int, int] = (0, 0), graph_capture_s: float = 0.0, graph_io_sets: int = 1):
        if attention_packing not in ATTENTION_PACKINGS:
            raise ValueError(f"attention_packing {attention_packing!r}: expected one of {ATTENTION_PACKINGS}")
        # A CUDA-graph engine replays graphs captured for a few static shapes, so it runs each batch
        # padded: its query tokens up to a multiple of padding_tokens[0] and the KV tokens it reads
        # from the cache up to a multiple of padding_tokens[1] (0: no padding). The padded tokens
        # cost what real ones do: every token-wise op runs on them, a packed attention reads them.
        self.q_padding, self.kv_padding = padding_tokens
        # An engine that captures graphs lazily pays graph_capture_s on the first batch of each
        # padded shape, per IO buffer set (serving/graphs.py); 0: graphs captured ahead of time.
        self.graph_capture_s, self.graph_io_sets = graph_capture_s, graph_io_sets
        self.llm, self.cost = llm, cost
        self.packed = attention_packing == "packed"
        self.tp, self.pp, self.ep = tp, pp, ep
        self.dtype, self.kv_dtype = dtype, kv_dtype
        self.cuda_graphs = cuda_graphs
        self.cpu_overhead_s = cpu_overhead_s
        self.moe_imbalance = moe_imbalance
        self.layers = tuple(len(stage_layers(llm, pp, s)) for s in range(pp))
        self._body: dict[int, tuple[tuple[float, ...], float, float]] = {}
        self._exact: dict[int, tuple[tuple[float, ...], float, float]] = {}
        self._attn: dict[tuple, tuple[float, float, float]] = {}
        self.attention_scale = llm.n_layers * tp     # per-layer per-GPU attention -> whole replica
        self._flat: dict[int, tuple[float, float, float]] = {}   # decode-only memo (pp 1, roofline)
        self._logits: dict[int, tuple[float, float, float]] = {}
        self._fast = type(cost.kernels) is RooflineKernels
        if not (self._fast and pp == 1) or self.packed or self.q_padding:
            self._flat = None
        if self._fast:
            self._prefill_rf = self._coefficients("prefill")
            self._decode_rf = self._coefficients("decode")

    def graph_captures(self) -> GraphCaptures | None:
        """A fresh record of captured shapes for one engine (None when captures cost nothing)."""
        if self.graph_capture_s <= 0:
            return None
        return GraphCaptures((self.q_padding, self.kv_padding), self.graph_capture_s, self.graph_io_sets)

    # -- cached parts -----------------------------------------------------------------------------
    def _stage_ops(self, tokens: int, sequences: int, stage: int):
        return linear_ops(self.llm, tokens, sequences, self.tp, self.pp, self.ep, self.dtype, stage,
                          self.moe_imbalance)

    def _price(self, ops) -> tuple[float, float, float]:
        est = self.cost.iteration(ops, self.cuda_graphs)
        return est.time_s, sum(o.flops * o.repeat for o in est.ops), sum(o.bytes * o.repeat for o in est.ops)

    def body(self, tokens: int) -> tuple[tuple[float, ...], float, float]:
        """(per-stage seconds, FLOPs, bytes per GPU summed over stages) of the token-wise ops.

        Exact up to EXACT_TOKENS tokens; above, linear interpolation between grid points
        GRID_PER_OCTAVE per doubling (2.2 % apart), so a run prices at most a few hundred token
        counts however many it meets. GEMM and elementwise times are linear in tokens between
        roofline ridge points, so the interpolation error is far below the model's own.
        """
        hit = self._body.get(tokens)
        if hit is None:
            if tokens <= EXACT_TOKENS:
                hit = self._body_exact(tokens)
            else:
                lo, hi = _grid_neighbours(tokens)
                a, b = self._body_exact(lo), self._body_exact(hi)
                w = (tokens - lo) / (hi - lo)
                hit = (tuple(x + w * (y - x) for x, y in zip(a[0], b[0])), a[1] + w * (b[1] - a[1]),
                       a[2] + w * (b[2] - a[2]))
            self._body[tokens] = hit
        return hit

    def _body_exact(self, tokens: int) -> tuple[tuple[float, ...], float, float]:
        hit = self._exact.get(tokens)
        if hit is None:
            times, flops, bytes_ = [], 0.0, 0.0
            for s in range(self.pp):
                t, f, b = self._price([o for o in self._stage_ops(tokens, 1, s) if o.name not in LOGIT_OPS])
                times.append(t)
                flops += f
                bytes_ += b
            hit = self._exact[tokens] = (tuple(times), flops, bytes_)
        return hit

    def logits(self, sequences: int) -> tuple[float, float, float]:
        """(seconds, FLOPs, bytes) of the final norm, LM head and sampling on the last stage."""
        hit = self._logits.get(sequences)
        if hit is None:
            ops = [o for o in self._stage_ops(1, sequences, self.pp - 1) if o.name in LOGIT_OPS]
            hit = self._logits[sequences] = self._price(ops)
        return hit

    def _coefficients(self, kind: str) -> _Linear:
        llm, tp, dt, kvd = self.llm, self.tp, self.dtype, self.kv_dtype
        if kind == "prefill":
            # aggregates (new tokens, context tokens, causal pairs)
            unit = [prefill_attention_op(llm, 1, *v, tp, 1, dt, kvd) for v in ((1, 0, 0.0), (0, 1, 0.0), (0, 0, 1.0))]
        else:
            # aggregates (sequences, context tokens, unused); the formulas are linear, so differences
            # of two evaluations give the per-context-token coefficients.
            one, more = decode_attention_op(llm, 1, 0, tp, 1, dt, kvd), decode_attention_op(llm, 1, 1, tp, 1, dt, kvd)
            unit = [one, Op("ctx", one.kind, more.flops - one.flops, more.bytes - one.bytes), Op("unused", one.kind)]
        k = self.cost.kernels
        eff = k.efficiency.get(unit[0].kind, (0.5, 0.7))
        gpu = self.cost.gpu
        return _Linear(tuple(o.flops for o in unit), tuple(o.bytes for o in unit), gpu.flops_per_s("bf16") * eff[0],
                       gpu.hbm_bandwidth_bytes_per_s * eff[1], k.min_kernel_s,
                       self.cost.launch.per_kernel_s(self.cuda_graphs))

    def _attention(self, n_prefill, prefill_new, prefill_ctx, prefill_pairs, n_decode, decode_ctx):
        """(seconds per layer, FLOPs per layer, bytes per layer) of the attention cores."""
        if self.packed:
            queries = prefill_new + n_decode
            cached = prefill_ctx + decode_ctx - queries
            if self.q_padding or self.kv_padding:
                # transformers' get_model_kwargs: keys = padded cache reads + padded queries
                queries = _round_up(queries, self.q_padding)
                cached = _round_up(cached, self.kv_padding)
            return self._packed_attention(queries, cached + queries)
        t = f = b = 0.0
        if self._fast:
            if not n_prefill:
                rf = self._decode_rf       # the common decode-only iteration, inlined
                f = rf.f[0] * n_decode + rf.f[1] * decode_ctx
                b = rf.b[0] * n_decode + rf.b[1] * decode_ctx
                return max(f / rf.flops_per_s, b / rf.bytes_per_s, rf.min_kernel_s, rf.gap_s), f, b
            if n_prefill:
                t, f, b = self._prefill_rf.per_layer(prefill_new, prefill_ctx, prefill_pairs)
            if n_decode:
                t2, f2, b2 = self._decode_rf.per_layer(n_decode, decode_ctx, 0.0)
                t, f, b = t + t2, f + f2, b + b2
            return t, f, b
        # Other kernels (calibrated tables) are priced at the aggregates snapped to a geometric
        # grid (1.1 % apart) and memoised: within ~0.5 % of the exact price, and a run prices
        # each grid cell once instead of every iteration.
        if n_prefill:
            key = (n_prefill, _snap(prefill_new), _snap(prefill_ctx), _snap(prefill_pairs))
            hit = self._attn.get(key)
            if hit is None:
                hit = self._attn[key] = self._priced_attention("prefill", *key)
            t, f, b = hit
        if n_decode:
            key = (n_decode, _snap(decode_ctx))
            hit = self._attn.get(key)
            if hit is None:
                hit = self._attn[key] = self._priced_attention("decode", *key)
            t, f, b = t + hit[0], f + hit[1], b + hit[2]
        return t, f, b

    def _packed_attention(self, queries: int, keys: int) -> tuple[float, float, float]:
        """One masked attention of all the batch's queries over all its keys (`packed`): priced as a
        single sequence of `queries` new tokens over `keys` keys with queries x keys pairs, since a
        kernel given an arbitrary mask computes every pair and discards the masked ones."""
        if self._fast:
            return self._prefill_rf.per_layer(queries, keys, float(queries) * keys)
        key = ("packed", _snap(queries), _snap(keys))
        hit = self._attn.get(key)
        if hit is None:
            q, k = max(1, round(key[1])), max(1, round(key[2]))
            op = prefill_attention_op(self.llm, 1, q, k, float(q) * k, self.tp, 1, self.dtype, self.kv_dtype)
            hit = self._attn[key] = (self.cost.op(op, self.cuda_graphs).time_s, op.flops, op.bytes)
        return hit

    def _priced_attention(self, kind: str, n: int, *aggregates: float) -> tuple[float, float, float]:
        llm, tp = self.llm, self.tp
        if kind == "prefill":
            new, ctx, pairs = aggregates
            op = prefill_attention_op(llm, n, max(1, round(new)), max(1, round(ctx)), pairs, tp, 1, self.dtype,
                                      self.kv_dtype)
        else:
            op = decode_attention_op(llm, n, max(n, round(aggregates[0])), tp, 1, self.dtype, self.kv_dtype)
        return self.cost.op(op, self.cuda_graphs).time_s, op.flops, op.bytes

    # -- public -----------------------------------------------------------------------------------
    def step(self, n_prefill: int = 0, prefill_new: int = 0, prefill_ctx: int = 0, prefill_pairs: float = 0.0,
             n_decode: int = 0, decode_ctx: int = 0) -> tuple[tuple[float, ...], float, float]:
        """(seconds per pipeline stage, FLOPs, bytes) of one iteration over all GPUs of the replica.

        n_prefill sequences bring prefill_new new tokens over prefill_ctx keys (causal pairs
        prefill_pairs); n_decode sequences each add one token over decode_ctx keys in total (new
        tokens included). The CPU scheduling overhead is paid before stage 0 starts.
        """
        tokens = prefill_new + n_decode
        if tokens == 0:
            return (0.0,) * self.pp, 0.0, 0.0
        if self.q_padding:
            tokens = _round_up(tokens, self.q_padding)
        if not n_prefill and self._flat is not None:
            # Decode-only iteration of a one-stage roofline replica: the hot path, one memo lookup
            # and the closed-form attention inlined.
            flat = self._flat.get(n_decode)
            if flat is None:
                flat = self._flat[n_decode] = self._flat_linear(n_decode)
            rf = self._decode_rf
            f = rf.f[0] * n_decode + rf.f[1] * decode_ctx
            b = rf.b[0] * n_decode + rf.b[1] * decode_ctx
            t = f / rf.flops_per_s
            if b / rf.bytes_per_s > t:
                t = b / rf.bytes_per_s
            if rf.floor_s > t:
                t = rf.floor_s
            scale = self.attention_scale
            return (flat[0] + t * self.layers[0],), flat[1] + f * scale, flat[2] + b * scale
        body = self._body.get(tokens)
        if body is None:
            body = self.body(tokens)
        logits = self._logits.get(n_prefill + n_decode)
        if logits is None:
            logits = self.logits(n_prefill + n_decode)
        at, af, ab = self._attention(n_prefill, prefill_new, prefill_ctx, prefill_pairs, n_decode, decode_ctx)
        flops = (body[1] + logits[1]) * self.tp + af * self.attention_scale
        bytes_ = (body[2] + logits[2]) * self.tp + ab * self.attention_scale
        if self.pp == 1:
            return (body[0][0] + logits[0] + self.cpu_overhead_s + at * self.layers[0],), flops, bytes_
        times = [s + at * n for s, n in zip(body[0], self.layers)]
        times[0] += self.cpu_overhead_s
        times[-1] += logits[0]
        return tuple(times), flops, bytes_

    def _flat_linear(self, n_decode: int) -> tuple[float, float, float]:
        """One-stage decode-only linear part: (seconds incl. CPU overhead, FLOPs, bytes) of all GPUs."""
        body = self.body(n_decode)
        logits = self.logits(n_decode)
        return (body[0][0] + logits[0] + self.cpu_overhead_s, (body[1] + logits[1]) * self.tp,
                (body[2] + logits[2]) * self.tp)

    def time_s(self, n_prefill: int = 0, prefill_new: int = 0, prefill_ctx: int = 0, prefill_pairs: float = 0.0,
               n_decode: int = 0, decode_ctx: int = 0) -> float:
        """Seconds for one iteration through every pipeline stage (its latency); see `step`."""
        if prefill_new + n_decode == 0:
            return 0.0
        return sum(self.step(n_prefill, prefill_new, prefill_ctx, prefill_pairs, n_decode, decode_ctx)[0])

    def stage_time_s(self, **kw) -> float:
        """The slowest pipeline stage's time (what bounds PP throughput)."""
        return max(self.step(**kw)[0])
