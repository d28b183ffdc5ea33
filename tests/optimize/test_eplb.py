"""The greedy EPLB baseline: conventions, DeepSeek's published example, theory of each step."""

import itertools

import numpy as np
import pytest

from simcluster.optimize.eplb import (
    balanced_packing,
    eplb,
    log2phy_from_phy2log,
    logcnt_from_phy2log,
    replicate_experts,
)
from simcluster.optimize.expert_loads import generate_loads


def test_matches_deepseek_readme_example():
    # Input and output of the example in DeepSeek's EPLB README (2 layers, 12 experts in 4
    # groups, 16 slots, 2 nodes x 4 GPUs, hierarchical policy).
    weight = np.array([[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
                       [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]])
    expected = np.array([[5, 6, 5, 7, 8, 4, 3, 4, 10, 9, 10, 2, 0, 1, 11, 1],
                         [7, 10, 6, 8, 6, 11, 8, 9, 2, 4, 5, 1, 5, 0, 3, 1]])
    np.testing.assert_array_equal(eplb(weight, 16, 2, 4, n_groups=4, policy="hierarchical"), expected)


@pytest.mark.parametrize("policy", ["hierarchical", "global"])
def test_conventions_agree(policy):
    loads = generate_loads(5, 32, 10000, skew=0.8, seed=3)
    phy2log = eplb(loads, 48, 2, 4, n_groups=4, policy=policy)
    logcnt = logcnt_from_phy2log(phy2log, 32)
    log2phy = log2phy_from_phy2log(phy2log, 32)
    assert phy2log.shape == (5, 48)
    assert (logcnt >= 1).all() and (logcnt.sum(axis=1) == 48).all()
    assert log2phy.shape[2] == logcnt.max()
    for layer in range(5):
        for expert in range(32):
            slots = log2phy[layer, expert]
            real = slots[slots >= 0]
            assert len(real) == logcnt[layer, expert]
            assert (slots[len(real):] == -1).all()
            assert (phy2log[layer, real] == expert).all()


def test_hierarchical_keeps_groups_on_nodes():
    loads = generate_loads(4, 64, 50000, skew=1.0, seed=7)
    n_nodes, gpus_per_node, n_groups, n_physical = 4, 2, 8, 96
    phy2log = eplb(loads, n_physical, n_nodes, gpus_per_node, n_groups, "hierarchical")
    slots_per_node = n_physical // n_nodes
    for row in phy2log:
        node_of_group = {}
        for slot, expert in enumerate(row):
            node = slot // slots_per_node
            group = expert // (64 // n_groups)
            assert node_of_group.setdefault(group, node) == node
        # Each node hosts the same number of whole groups.
        assert sorted(np.bincount(list(node_of_group.values()))) == [2, 2, 2, 2]


def test_global_ignores_groups_and_balances_at_least_as_well_as_one_group_per_node():
    loads = generate_loads(6, 32, 20000, skew=1.2, seed=11)
    glob = eplb(loads, 64, 2, 4, n_groups=2, policy="global")
    hier = eplb(loads, 64, 2, 4, n_groups=2, policy="hierarchical")
    from simcluster.optimize.expert_layout import balancedness, gpu_loads

    b_glob = np.mean([balancedness(gpu_loads(l, r, 8)) for l, r in zip(loads, glob)])
    b_hier = np.mean([balancedness(gpu_loads(l, r, 8)) for l, r in zip(loads, hier)])
    # With only two heavy groups, forcing each onto its own node must cost balance.
    assert b_glob > b_hier


def test_auto_policy_follows_group_divisibility():
    loads = generate_loads(2, 12, 1000, seed=0)
    np.testing.assert_array_equal(eplb(loads, 16, 2, 4, 4, "auto"), eplb(loads, 16, 2, 4, 4, "hierarchical"))
    np.testing.assert_array_equal(eplb(loads, 16, 2, 4, 3, "auto"), eplb(loads, 16, 2, 4, 3, "global"))


def test_replication_minimises_the_largest_load_per_replica():
    rng = np.random.default_rng(0)
    for _ in range(20):
        loads = rng.integers(1, 100, size=4).astype(float)
        slot_expert, rank = replicate_experts(loads, 8)
        counts = np.bincount(slot_expert, minlength=4)
        best = min(
            max(loads / np.array(c))
            for c in itertools.product(range(1, 6), repeat=4) if sum(c) == 8
        )
        assert max(loads / counts) == pytest.approx(best)
        # Ranks number each expert's replicas 0..count-1.
        for e in range(4):
            assert sorted(rank[slot_expert == e]) == list(range(counts[e]))


def test_balanced_packing_fills_every_pack_equally_heaviest_first():
    pack, rank = balanced_packing(np.array([5.0, 4.0, 3.0, 3.0, 2.0, 1.0]), 2)
    # Hand run: 5->A, 4->B, 3->B(7), 3->A(8), then B is lighter: 2->B(9), 1->A(9).
    assert pack.tolist() == [0, 1, 1, 0, 1, 0]
    assert sorted(np.bincount(pack)) == [3, 3]
    assert rank.tolist() == [0, 0, 1, 1, 2, 2]


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError):
        eplb(np.ones((1, 12)), 15, 2, 4, 4, "hierarchical")
    with pytest.raises(ValueError):
        eplb(np.ones((1, 12)), 16, 2, 4, 3, "hierarchical")
    with pytest.raises(ValueError):
        eplb(np.ones((1, 12)), 16, 2, 4, 4, "nearest")
