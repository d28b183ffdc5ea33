"""Collectives against their closed forms (nccl-tests PERFORMANCE.md bus-bandwidth factors)."""

import pytest

from simcluster.cost.collectives import LinkParams, bus_factor, collective_time_s, ring_time_s, tree_time_s

LINKS = LinkParams(gpus_per_node=8, intra_bandwidth_bytes_per_s=360e9, intra_latency_s=3e-6,
                   inter_bandwidth_bytes_per_s=40e9, inter_latency_s=8e-6)


def test_bus_factors():
    assert bus_factor("all_reduce", 8) == pytest.approx(2 * 7 / 8)
    assert bus_factor("all_gather", 4) == pytest.approx(3 / 4)
    assert bus_factor("send_recv", 2) == 1.0
    assert bus_factor("all_reduce", 1) == 0.0


def test_ring_all_reduce_large_message_is_bandwidth_bound():
    s = 1 << 30
    t = ring_time_s("all_reduce", s, 8, 360e9, 3e-6)
    assert t == pytest.approx(2 * 7 / 8 * s / 360e9 + 14 * 3e-6)


def test_tree_wins_small_messages_both_bandwidth_bound_when_large():
    small, large = 4096, 1 << 30
    # latency: 2·log2(64) = 12 hops against the ring's 2·63
    assert tree_time_s("all_reduce", small, 64, 40e9, 8e-6) < ring_time_s("all_reduce", small, 64, 40e9, 8e-6) / 5
    # bandwidth: each byte crosses a link ~2 times in both
    assert ring_time_s("all_reduce", large, 64, 40e9, 8e-6) == pytest.approx(
        tree_time_s("all_reduce", large, 64, 40e9, 8e-6), rel=0.03)


def test_cross_node_collectives_are_slower_and_bounded_by_nic():
    s = 256 << 20
    intra = collective_time_s("all_reduce", s, 8, LINKS)
    inter = collective_time_s("all_reduce", s, 16, LINKS)
    assert inter > intra
    # Hierarchical: the inter-node phase moves S/8 per rail; never slower than a flat ring on the NICs.
    flat = ring_time_s("all_reduce", s, 16, 40e9, 8e-6)
    assert inter < flat


def test_single_rank_and_zero_bytes_cost_nothing():
    assert collective_time_s("all_gather", 1 << 20, 1, LINKS) == 0
    assert collective_time_s("all_reduce", 0, 8, LINKS) == 0
    with pytest.raises(ValueError, match="unknown collective"):
        collective_time_s("all_sum", 1, 2, LINKS)
