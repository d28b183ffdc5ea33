"""Cluster behaviour: routers, prefix caching and affinity, P/D disaggregation, link contention, EP."""

import numpy as np
import pytest
import simpy

from simcluster.cost import cost_model_for
from simcluster.hardware.gpu import load_gpu
from simcluster.llm.ops import kv_bytes_per_token
from simcluster.llm.spec import load_llm
from simcluster.serving.links import Link, LinkNetwork
from simcluster.serving.simulate import ClusterError, simulate_serving
from simcluster.serving.step import StepTimer
from simcluster.workload import Trace, read_trace


@pytest.fixture(scope="module")
def mooncake():
    return read_trace("scenarios/traces/mooncake_conversation.jsonl").head(300)


def test_round_robin_deals_requests_in_turn(llm, group, poisson_trace):
    res = simulate_serving(llm, poisson_trace(103, 20.0, 300, 20), [group(count=4)], "round_robin")
    counts = res.requests["replica"].value_counts()
    assert sorted(counts.tolist()) == [25, 26, 26, 26]
    first = res.requests.sort_values("request_id")["replica"].tolist()[:8]
    assert first[:4] == first[4:] and len(set(first[:4])) == 4


def test_least_outstanding_and_least_kv_spread_a_burst_evenly(llm, group):
    burst = Trace("burst", np.zeros(40), np.full(40, 500), np.full(40, 50))
    for router in ("least_outstanding", "least_kv"):
        res = simulate_serving(llm, burst, [group(count=4)], router)
        assert res.requests["replica"].value_counts().tolist() == [10, 10, 10, 10], router


def test_least_outstanding_prefers_the_idle_replica(llm, group):
    # One long request, then short ones while it runs: none of them joins it.
    trace = Trace("t", np.array([0.0, 0.01, 0.02, 0.03]), np.array([4000, 100, 100, 100]), np.array([500, 5, 5, 5]))
    res = simulate_serving(llm, trace, [group(count=2)], "least_outstanding").requests.sort_values("request_id")
    assert res["replica"].iloc[0] != res["replica"].iloc[1]


def test_prefix_caching_cuts_prefill_tokens_on_the_mooncake_sample(llm, group, mooncake):
    off = simulate_serving(llm, mooncake, [group(count=2)], "round_robin")
    on = simulate_serving(llm, mooncake, [group(count=2, prefix_caching=True)], "round_robin")
    prompts = int(mooncake.prompt_tokens.sum())
    assert off.iterations["prefill_tokens"].sum() == prompts and off.requests["cached_tokens"].sum() == 0
    cached = int(on.requests["cached_tokens"].sum())
    assert cached > 0 and cached % 512 == 0          # whole 512-token hash blocks of the trace
    assert on.iterations["prefill_tokens"].sum() == prompts - cached
    assert (on.requests["cached_tokens"] < on.requests["prompt_tokens"]).all()


def test_repeated_prompt_hits_all_but_its_last_block(llm, group):
    hashes = (np.arange(4), np.arange(4))
    trace = Trace("same", np.array([0.0, 5.0]), np.array([2048, 2048]), np.array([3, 3]), hash_ids=hashes)
    res = simulate_serving(llm, trace, [group(prefix_caching=True)]).requests
    # 4 cache units of 512: at least one token must be computed, so 3 units hit.
    assert res["cached_tokens"].tolist() == [0, 1536]


def test_block_size_must_divide_the_trace_blocks(llm, group, mooncake):
    with pytest.raises(ClusterError, match="block_size 48"):
        simulate_serving(llm, mooncake, [group(prefix_caching=True, block_size=48)])


def test_prefix_affinity_routes_to_the_replica_holding_the_prefix(llm, group, mooncake):
    rr = simulate_serving(llm, mooncake, [group(count=4, prefix_caching=True)], "round_robin").requests
    pa = simulate_serving(llm, mooncake, [group(count=4, prefix_caching=True)], "prefix_affinity").requests
    assert pa["cached_tokens"].sum() > rr["cached_tokens"].sum()
    # Two requests sharing a long prefix, far apart in time, land on the same replica.
    hashes = (np.arange(8), np.arange(8), np.arange(100, 108))
    trace = Trace("p", np.array([0.0, 3.0, 3.0]), np.full(3, 4096), np.full(3, 4), hash_ids=hashes)
    res = simulate_serving(llm, trace, [group(count=4, prefix_caching=True)], "prefix_affinity").requests
    assert res["replica"].iloc[0] == res["replica"].iloc[1] and res["cached_tokens"].iloc[1] == 3584


def _pd_groups(group, prefill_gpu=None, **kw):
    return [group(count=1, role="prefill", **({"gpu": prefill_gpu[0], "cost": prefill_gpu[1]} if prefill_gpu else {}), **kw),
            group(count=1, role="decode", **kw)]


def test_disaggregated_ttft_is_the_prefill_and_the_transfer_delays_the_second_token(llm, group, roofline):
    trace = Trace("one", np.array([0.0]), np.array([4000]), np.array([10]))
    res = simulate_serving(llm, trace, _pd_groups(group))
    r = res.requests.iloc[0]
    prefill_s = StepTimer(llm, roofline).time_s(1, 4000, 4000, 4000 * 4001 / 2)
    assert r["first_token_s"] == pytest.approx(prefill_s, rel=1e-9)
    # Both H100 replicas sit in one DGX node: NVLink, each GPU's link at 80 % bus efficiency.
    kv_bytes = 4000 * kv_bytes_per_token(llm)
    transfer_s = roofline.links.intra_latency_s + kv_bytes / roofline.links.intra_bandwidth_bytes_per_s
    assert r["kv_transfer_s"] == pytest.approx(transfer_s, rel=1e-9)
    assert r["max_itl_s"] > transfer_s                 # the first decode gap waits for the KV
    assert r["prefill_replica"].startswith("P:") and r["replica"].startswith("D:")
    assert res.kv_transfer_bytes == pytest.approx(kv_bytes)
    mixed = simulate_serving(llm, trace, [group()]).requests.iloc[0]
    assert r["finish_s"] > mixed["finish_s"]


def test_pools_on_different_gpus_transfer_over_the_nics(llm, group):
    a100 = (load_gpu("a100-sxm-80gb"), cost_model_for("a100-sxm-80gb", "roofline"))
    trace = Trace("one", np.array([0.0]), np.array([4000]), np.array([10]))
    nvlink = simulate_serving(llm, trace, _pd_groups(group)).requests.iloc[0]
    nic = simulate_serving(llm, trace, _pd_groups(group, a100)).requests.iloc[0]
    assert nic["kv_transfer_s"] > 2 * nvlink["kv_transfer_s"]
    links = a100[1].links
    expect = links.inter_latency_s + 4000 * kv_bytes_per_token(llm) / min(
        links.inter_bandwidth_bytes_per_s, cost_model_for("h100-sxm", "roofline").links.inter_bandwidth_bytes_per_s)
    assert nic["kv_transfer_s"] == pytest.approx(expect, rel=1e-9)


def test_every_request_of_a_disaggregated_run_finishes_on_the_decode_pool(llm, group, poisson_trace):
    res = simulate_serving(llm, poisson_trace(200, 10.0, 1500, 80), _pd_groups(group))
    assert res.unfinished == 0
    assert res.requests["replica"].str.startswith("D:").all()
    it = res.iterations
    prefill = it[it["replica"].str.startswith("P:")]
    assert prefill["n_decode"].sum() == 0 and prefill["prefill_tokens"].sum() == 200 * 1500
    assert it[it["replica"].str.startswith("D:")]["prefill_tokens"].sum() == 0


def test_role_mistakes_are_reported(llm, group, poisson_trace):
    trace = poisson_trace(5, 1.0, 100, 5)
    with pytest.raises(ClusterError, match="needs both"):
        simulate_serving(llm, trace, [group(role="prefill")])
    with pytest.raises(ClusterError, match="role 'both'"):
        simulate_serving(llm, trace, [group(role="both")])


def test_processor_sharing_splits_a_link_between_concurrent_transfers():
    env = simpy.Environment()
    net = LinkNetwork(env)
    a, b, c = Link("a", 100.0), Link("b", 100.0), Link("c", 1000.0)
    done = {}
    net.send((a, c), 100.0, 0.0, lambda t: done.setdefault("x", t))
    net.send((a, c), 200.0, 0.0, lambda t: done.setdefault("y", t))
    net.send((b, c), 100.0, 0.0, lambda t: done.setdefault("z", t))
    env.run()
    # x and y share a (50 each): x ends at 2 s; y has 100 left alone at 100/s: 3 s. z never shares b.
    assert done["x"] == pytest.approx(2.0) and done["y"] == pytest.approx(3.0) and done["z"] == pytest.approx(1.0)


def test_concurrent_hand_offs_from_one_prefill_replica_share_its_link(llm, group):
    trace = Trace("two", np.array([0.0, 0.0]), np.array([4000, 4000]), np.array([10, 10]))
    res = simulate_serving(llm, trace, [group(count=1, role="prefill", max_batched_tokens=8192),
                                        group(count=2, role="decode")]).requests
    alone = simulate_serving(llm, Trace("one", np.array([0.0]), np.array([4000]), np.array([10])),
                             [group(count=1, role="prefill"), group(count=2, role="decode")]).requests
    # Both prefills end together, so both transfers share the sender's link: each takes twice as long
    # (less the one-off latency).
    lat = cost_model_for("h100-sxm", "roofline").links.intra_latency_s
    single = alone["kv_transfer_s"].iloc[0] - lat
    assert res["kv_transfer_s"].tolist() == pytest.approx([lat + 2 * single] * 2, rel=1e-9)


def test_expert_parallel_mixtral_pays_all_to_all(group):
    mixtral = load_llm("mixtral-8x7b")
    cost = cost_model_for("h100-sxm", "roofline")
    with_ep = StepTimer(mixtral, cost, tp=2, ep=2)
    without = StepTimer(mixtral, cost, tp=2, ep=1)
    assert with_ep.time_s(n_decode=64, decode_ctx=64000) != without.time_s(n_decode=64, decode_ctx=64000)
    from simcluster.llm.ops import linear_ops
    names = {o.name for o in linear_ops(mixtral, 64, 64, 2, 1, 2)}
    assert {"moe.dispatch", "moe.combine", "tp.all_reduce"} <= names
    trace = Trace("t", np.linspace(0, 2, 40), np.full(40, 1000), np.full(40, 30))
    res = simulate_serving(mixtral, trace, [group(tp=2, ep=2)])
    assert res.unfinished == 0 and "ep2" in res.requests["replica"].iloc[0]
