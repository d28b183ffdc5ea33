"""StepTimer: the duration of one serving iteration of a replica, fast enough for the event loop.

Everything except the attention core depends only on (new tokens, sequences emitting logits), so
it is cached by that pair; attention is timed from batch aggregates on every call.
"""

from __future__ import annotations

from simcluster.cost.model import CostModel
from simcluster.llm.ops import decode_attention_op, linear_ops, prefill_attention_op, stage_layers
from simcluster.llm.spec import LlmSpec


class StepTimer:
    """Iteration time of one TP×PP(×EP) replica.

    With pp > 1 the returned time is the pipeline's latency for one batch (sum of stages); the
    replica's throughput model (how many batches are in flight) lives in the replica process.
    """

    def __init__(self, llm: LlmSpec, cost: CostModel, tp: int = 1, pp: int = 1, ep: int = 1,
                 dtype: str = "bf16", kv_dtype: str = "bf16", cuda_graphs: bool = True,
                 cpu_overhead_s: float = 0.0, moe_imbalance: float = 1.0):
        self.llm, self.cost = llm, cost
        self.tp, self.pp, self.ep = tp, pp, ep
        self.dtype, self.kv_dtype = dtype, kv_dtype
        self.cuda_graphs = cuda_graphs
        self.cpu_overhead_s = cpu_overhead_s
        self.moe_imbalance = moe_imbalance
        self._layers = [len(stage_layers(llm, pp, s)) for s in range(pp)]
        self._linear: dict[tuple[int, int], float] = {}
        self._linear_stage_max: dict[tuple[int, int], float] = {}

    def _linear_s(self, tokens: int, sequences: int) -> tuple[float, float]:
        key = (tokens, sequences)
        if key not in self._linear:
            per_stage = []
            for s in range(self.pp):
                ops = linear_ops(self.llm, tokens, sequences, self.tp, self.pp, self.ep, self.dtype, s,
                                 self.moe_imbalance)
                per_stage.append(self.cost.iteration(ops, self.cuda_graphs).time_s)
            self._linear[key] = sum(per_stage)
            self._linear_stage_max[key] = max(per_stage)
        return self._linear[key], self._linear_stage_max[key]

    def _attention_s(self, n_prefill: int, prefill_new: int, prefill_ctx: int, prefill_pairs: float,
                     n_decode: int, decode_ctx: int) -> float:
        t = 0.0
        layers = self.llm.n_layers  # attention runs in every layer, whichever stage holds it
        if n_prefill:
            op = prefill_attention_op(self.llm, n_prefill, prefill_new, prefill_ctx, prefill_pairs, self.tp,
                                      layers, self.dtype, self.kv_dtype)
            t += self.cost.op(op, self.cuda_graphs).time_s
        if n_decode:
            op = decode_attention_op(self.llm, n_decode, decode_ctx, self.tp, layers, self.dtype, self.kv_dtype)
            t += self.cost.op(op, self.cuda_graphs).time_s
        return t

    def time_s(self, n_prefill: int = 0, prefill_new: int = 0, prefill_ctx: int = 0, prefill_pairs: float = 0.0,
               n_decode: int = 0, decode_ctx: int = 0) -> float:
        """Seconds for one iteration.

        n_prefill sequences bring prefill_new new tokens over prefill_ctx total keys (causal pairs
        prefill_pairs); n_decode sequences each add one token, over decode_ctx keys in total.
        """
        tokens = prefill_new + n_decode
        if tokens == 0:
            return 0.0
        linear, _ = self._linear_s(tokens, n_prefill + n_decode)
        attn = self._attention_s(n_prefill, prefill_new, prefill_ctx, prefill_pairs, n_decode, decode_ctx)
        return linear + attn + self.cpu_overhead_s

    def stage_time_s(self, **kw) -> float:
        """The slowest pipeline stage's share of an iteration (what bounds PP throughput)."""
        total = self.time_s(**kw)
        return total / self.pp if self.pp > 1 else total
