"""CUDA-graph captures while serving: the first batch of each padded shape pays for capturing it.

An engine that replays CUDA graphs but captures them lazily (transformers' continuous batching)
runs a batch of a shape it has not seen yet eagerly, records it into a graph and only then replays
it: that iteration costs the capture on top of its GPU time. The shape is the batch's padded size
(query tokens and cached KV tokens rounded up to the padding intervals) and the longest sequence's
KV length rounded up to a power of two, at least 1024 (transformers:
`ContinuousBatchingIOs._get_graph_key` and `get_model_kwargs`, generation/continuous_batching/
input_outputs.py). With async batching the engine keeps two IO buffer sets used in turn, each with
its own graphs, so a shape is captured once per set.
"""

from __future__ import annotations

import math

MIN_LONGEST_KV_TOKENS = 1024   # transformers pads max_seqlen_k to a power of two, at least this


def _round_up(n: int, interval: int) -> int:
    if interval <= 0:
        return n
    return max(1, -(-n // interval)) * interval


def _pow2_at_least(n: int, floor: int) -> int:
    n = max(n, floor)
    return 1 << math.ceil(math.log2(n))


class GraphCaptures:
    """Shapes one engine has captured so far, and the capture cost of the next batch.

    padding_tokens: (query, cached-KV) padding intervals in tokens; capture_s: seconds one capture
    adds to its iteration; io_sets: graph sets used in turn (2 with async batching).

    >>> g = GraphCaptures((64, 16384), 0.15)
    >>> g.cost_s(tokens=8, cached_kv=3000, longest_kv=400), g.cost_s(tokens=9, cached_kv=5000, longest_kv=900)
    (0.15, 0.0)
    """

    def __init__(self, padding_tokens: tuple[int, int], capture_s: float, io_sets: int = 1):
        self.q_padding, self.kv_padding = padding_tokens
        self.capture_s = capture_s
        self.seen: list[set] = [set() for _ in range(io_sets)]
        self.turn = 0
        self.captures = 0

    def cost_s(self, tokens: int, cached_kv: int, longest_kv: int) -> float:
        """Capture seconds the next iteration pays (0 when its shape is already captured)."""
        seen = self.seen[self.turn]
        self.turn = (self.turn + 1) % len(self.seen)
        key = (_round_up(tokens, self.q_padding), _round_up(cached_kv, self.kv_padding),
               _pow2_at_least(longest_kv, MIN_LONGEST_KV_TOKENS))
        if key in seen:
            return 0.0
        seen.add(key)
        self.captures += 1
        return self.capture_s
