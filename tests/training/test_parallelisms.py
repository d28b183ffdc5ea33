"""Context, expert and data parallelism on the topology: directions the physics dictates."""

import pytest

from simcluster.cost import cost_model_for
from simcluster.hardware.node import load_node
from simcluster.hardware.topology import build_cluster, set_link_bandwidth
from simcluster.llm.spec import load_llm
from simcluster.training.plan import TrainingPlan
from simcluster.training.simulate import simulate_training

CM = cost_model_for("h100-sxm", "roofline")


def test_context_parallel_splits_activations_and_adds_ring_traffic():
    llm = load_llm("llama-3.1-8b")
    base = dict(gpu="h100-sxm", seq_len=32768, micro_batch=1)
    one = simulate_training(llm, TrainingPlan(n_gpus=8, dp=8, zero=3, **base), CM)
    cp = simulate_training(llm, TrainingPlan(n_gpus=8, dp=4, cp=2, zero=3, **base), CM)
    assert cp.memory.activation_bytes == pytest.approx(one.memory.activation_bytes / 2, rel=1e-6)
    # Same tokens per GPU per iteration, half the sequence per GPU: slower per token at best equal.
    assert cp.tokens_per_s <= one.tokens_per_s * 1.01


def test_expert_parallel_all_to_all_and_imbalance():
    llm = load_llm("mixtral-8x7b")
    kw = dict(gpu="h100-sxm", n_gpus=16, tp=2, dp=8, ep=8, zero=1, seq_len=4096, sequence_parallel=True)
    even = simulate_training(llm, TrainingPlan(**kw), CM)
    skew = simulate_training(llm, TrainingPlan(**kw, moe_imbalance=1.5), CM)
    capped = simulate_training(llm, TrainingPlan(**kw, moe_imbalance=1.5, capacity_factor=1.25), CM)
    assert even.exposed_comm_s > 0
    assert even.time_s < capped.time_s < skew.time_s        # dropping tokens above capacity bounds the slowdown
    assert skew.memory.activation_bytes > even.memory.activation_bytes


def test_measured_slow_link_slows_data_parallel():
    llm = load_llm("llama-3.1-8b")
    plan = TrainingPlan(gpu="h100-sxm", n_gpus=16, dp=16, zero=0, seq_len=2048)
    g = build_cluster(load_node("dgx-h100"), 2)
    fast = simulate_training(llm, plan, CM, topology=g)
    # One degraded rail between the two nodes (a quarter of its datasheet rate) paces every ring.
    slow = simulate_training(llm, plan, CM, topology=set_link_bandwidth(g, "n0.g3", "n1.g3", 12.5e9))
    assert fast.time_s == pytest.approx(simulate_training(llm, plan, CM).time_s, rel=1e-9)
    assert slow.exposed_comm_s > 2 * fast.exposed_comm_s
