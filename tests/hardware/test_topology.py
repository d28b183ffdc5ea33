"""Cluster graphs: routes, bottlenecks, latencies and measured overrides."""

import dataclasses

import networkx as nx
import pytest

from simcluster.hardware import (
    TopologyError,
    build_cluster,
    gpus,
    load_node,
    path_bandwidth_bytes_per_s,
    path_latency_s,
    route,
    set_link_bandwidth,
)


@pytest.fixture(scope="module")
def dgx2():
    return build_cluster(load_node("dgx-h100"), 2)


def test_vertices_and_edge_attributes(dgx2):
    node = load_node("dgx-h100")
    assert gpus(dgx2) == [f"n{i}.g{j}" for i in range(2) for j in range(8)]
    kinds = nx.get_node_attributes(dgx2, "kind")
    assert sum(k == "nic" for k in kinds.values()) == 2 * node.nics_per_node
    assert kinds["n0.nvswitch"] == "nvswitch" and kinds["spine"] == "spine" and kinds["leaf3"] == "leaf"
    for _, _, d in dgx2.edges(data=True):
        assert d["bandwidth_bytes_per_s"] > 0 and d["latency_s"] >= 0 and d["kind"]
    assert nx.is_connected(dgx2)


def test_intra_node_pair_gets_nvlink_bandwidth_and_latency(dgx2):
    node = load_node("dgx-h100")
    assert path_bandwidth_bytes_per_s(dgx2, "n0.g0", "n0.g7") == node.intra_node_bandwidth_bytes_per_s
    assert path_latency_s(dgx2, "n0.g0", "n0.g7") == pytest.approx(node.intra_node_latency_s)
    assert route(dgx2, "n0.g0", "n0.g7") == ["n0.g0", "n0.nvswitch", "n0.g7"]


def test_inter_node_bottleneck_is_the_nic(dgx2):
    node = load_node("dgx-h100")
    for b in ("n1.g0", "n1.g5"):
        assert path_bandwidth_bytes_per_s(dgx2, "n0.g0", b) == node.nic_bandwidth_bytes_per_s
        assert path_latency_s(dgx2, "n0.g0", b) == pytest.approx(node.inter_node_latency_s)
    same_rail = route(dgx2, "n0.g3", "n1.g3")
    assert same_rail == ["n0.g3", "n0.nic3", "leaf3", "n1.nic3", "n1.g3"]


def test_pcie_box_pairs_go_through_pcie():
    node = load_node("l40s-8x")
    g = build_cluster(node, 1)
    path = route(g, "n0.g0", "n0.g5")
    assert path == ["n0.g0", "n0.pcie", "n0.g5"]
    assert all(g.edges[u, v]["kind"] == "pcie" for u, v in zip(path, path[1:]))
    assert path_bandwidth_bytes_per_s(g, "n0.g0", "n0.g5") == 32e9
    assert path_latency_s(g, "n0.g0", "n0.g5") == pytest.approx(node.intra_node_latency_s)


def test_shared_nic_does_not_carry_intra_node_traffic():
    # l4-8x has one NIC for 8 GPUs; both GPUs touch it, but peers talk over PCIe, not through the NIC.
    g = build_cluster(load_node("l4-8x"), 2)
    assert "n0.nic0" not in route(g, "n0.g0", "n0.g1")
    assert path_bandwidth_bytes_per_s(g, "n0.g0", "n1.g7") == 100e9 / 8


def test_infinity_fabric_is_a_full_mesh_with_one_link_per_peer():
    node = load_node("mi300x-8x")
    g = build_cluster(node, 1)
    assert route(g, "n0.g2", "n0.g6") == ["n0.g2", "n0.g6"]
    # 896 GB/s aggregate bidirectional over 7 peers: 64 GB/s per direction to any one peer.
    assert path_bandwidth_bytes_per_s(g, "n0.g2", "n0.g6") == pytest.approx(64e9)


def test_nvlink_bridge_pairs_use_the_bridge_others_use_pcie():
    node = dataclasses.replace(load_node("h100-pcie-8x"), name="h100-pcie-bridged", intra_node_kind="nvlink-bridge",
                               intra_node_bandwidth_bytes_per_s=300e9, intra_node_latency_s=2e-6)
    g = build_cluster(node, 1)
    assert route(g, "n0.g2", "n0.g3") == ["n0.g2", "n0.g3"]
    assert path_bandwidth_bytes_per_s(g, "n0.g2", "n0.g3") == 300e9
    assert path_bandwidth_bytes_per_s(g, "n0.g1", "n0.g2") == node.host_to_device_bandwidth_bytes_per_s
    assert "n0.pcie" in route(g, "n0.g1", "n0.g2")


def test_override_of_a_link_changes_every_route_over_it(dgx2):
    g = set_link_bandwidth(dgx2, "n0.nic0", "leaf0", 10e9)
    assert path_bandwidth_bytes_per_s(g, "n0.g0", "n1.g0") == 10e9
    assert path_bandwidth_bytes_per_s(g, "n0.g1", "n1.g1") == 50e9       # other rail untouched
    assert path_bandwidth_bytes_per_s(dgx2, "n0.g0", "n1.g0") == 50e9    # original graph untouched


def test_override_of_a_gpu_pair_applies_to_that_pair_only(dgx2):
    g = set_link_bandwidth(dgx2, "n0.g1", "n0.g0", 380e9)                # e.g. measured p2p copy rate
    assert path_bandwidth_bytes_per_s(g, "n0.g0", "n0.g1") == 380e9
    assert path_bandwidth_bytes_per_s(g, "n0.g1", "n0.g0") == 380e9
    assert path_bandwidth_bytes_per_s(g, "n0.g0", "n0.g2") == 450e9
    assert path_bandwidth_bytes_per_s(dgx2, "n0.g0", "n0.g1") == 450e9
    g2 = set_link_bandwidth(g, "n0.g2", "n0.g3", 400e9)                  # overrides accumulate
    assert path_bandwidth_bytes_per_s(g2, "n0.g0", "n0.g1") == 380e9
    assert path_bandwidth_bytes_per_s(g2, "n0.g2", "n0.g3") == 400e9


def test_graphs_are_immutable(dgx2):
    with pytest.raises(nx.NetworkXError):
        dgx2.add_edge("n0.g0", "n1.g0")
    with pytest.raises(nx.NetworkXError):
        set_link_bandwidth(dgx2, "n0.g0", "n0.g1", 1e9).remove_node("spine")


@pytest.mark.parametrize("call", [
    lambda g: path_bandwidth_bytes_per_s(g, "n0.g0", "n9.g0"),
    lambda g: path_latency_s(g, "x", "n0.g0"),
    lambda g: set_link_bandwidth(g, "n0.g0", "n0.g1", 0.0),
    lambda g: set_link_bandwidth(g, "n0.g0", "n0.g1", float("nan")),
    lambda g: set_link_bandwidth(g, "n0.g0", "n0.g0", 1e9),
    lambda g: build_cluster(load_node("dgx-h100"), 0),
])
def test_bad_requests_raise_topology_error(dgx2, call):
    with pytest.raises(TopologyError):
        call(dgx2)


def test_same_vertex_is_free_and_instant(dgx2):
    assert path_latency_s(dgx2, "n0.g0", "n0.g0") == 0.0
    assert path_bandwidth_bytes_per_s(dgx2, "n0.g0", "n0.g0") == float("inf")


def test_leaf_spine_never_bottlenecks_below_the_nics():
    node = load_node("dgx-a100")
    g = build_cluster(node, 4)
    for u, v, d in g.edges(data=True):
        if "spine" in (u, v):
            assert d["bandwidth_bytes_per_s"] == 4 * node.nic_bandwidth_bytes_per_s
    assert path_bandwidth_bytes_per_s(g, "n0.g0", "n3.g7") == node.nic_bandwidth_bytes_per_s
