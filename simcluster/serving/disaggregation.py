"""Prefill/decode disaggregation: hand a prefilled sequence's KV cache to a decode replica.

The prefill replica emits the first token (TTFT is measured there), keeps the sequence's blocks
until the last byte has left, and the decode replica chosen by the router at that moment takes
the sequence with its KV in place (no prefill). The transfer crosses NVLink when both replicas sit
in one node, the NICs otherwise, sharing each link with concurrent transfers (see links.py).
"""

from __future__ import annotations


def kv_transfer_links(src, dst) -> tuple[tuple, float]:
    """(links crossed, latency in s) from replica src to replica dst."""
    if src.node is not None and src.node == dst.node:
        return (src.nvl_out, dst.nvl_in), src.intra_latency_s
    return (src.nic_out, dst.nic_in), src.inter_latency_s


class Handoff:
    """The on_prefilled callback of prefill schedulers.

    kv_bytes_per_token: KV bytes of one token over the whole model (all layers, all KV heads).
    """

    def __init__(self, env, decode_replicas: list, pick, network, kv_bytes_per_token: float):
        self.env, self.decode_replicas, self.pick = env, decode_replicas, pick
        self.network, self.kv_bytes_per_token = network, kv_bytes_per_token

    def __call__(self, seq, scheduler) -> None:
        src = scheduler.replica
        dst = self.pick(self.decode_replicas, seq)
        dst.outstanding += 1          # the router sees it as soon as it is on its way
        seq.prefill_replica = src.index
        links, latency_s = kv_transfer_links(src, dst)
        start_s = self.env.now

        def arrived(now_s: float) -> None:
            scheduler.release(seq)
            seq.transfer_s = now_s - start_s
            seq.kv_ready = True
            seq.done = seq.target = seq.tokens
            dst.submit(seq, counted=True)

        self.network.send(links, seq.tokens * self.kv_bytes_per_token, latency_s, arrived)
