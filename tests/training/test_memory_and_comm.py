"""Memory model against ZeRO and Korthikanti et al. 2022; DP collectives against the ring formula;
the processor-sharing link; plan validation."""

import pytest
import simpy

from simcluster.cost import cost_model_for
from simcluster.llm.spec import load_llm
from simcluster.training.links import SharedLink
from simcluster.training.memory import activation_bytes_per_layer, states_bytes_per_param, training_memory
from simcluster.training.ops import ChunkCost
from simcluster.training.placement import plan_groups
from simcluster.training.plan import PlanError, TrainingPlan, validate_plan
from simcluster.training.simulate import replay_iteration, simulate_training

CM = cost_model_for("h100-sxm", "roofline")
LLAMA8 = load_llm("llama-3.1-8b")


@pytest.mark.parametrize("s,b,h,a", [(2048, 1, 12288, 96), (4096, 2, 8192, 64)])
def test_activations_reproduce_korthikanti(s, b, h, a):
    # §4.1: sbh(34 + 5as/h) without parallelism; Table 2 rows for tp, sp, selective, full.
    kw = dict(gated=False, dropout=True, flash=False)
    sbh = s * b * h
    assert activation_bytes_per_layer(s, b, h, a, 4 * h, h, **kw) == pytest.approx(sbh * (34 + 5 * a * s / h))
    t = 8
    assert activation_bytes_per_layer(s, b, h, a, 4 * h, h, tp=t, **kw) == pytest.approx(
        sbh * (10 + 24 / t + 5 * a * s / (h * t)))
    assert activation_bytes_per_layer(s, b, h, a, 4 * h, h, tp=t, sequence_parallel=True, **kw) == pytest.approx(
        sbh / t * (34 + 5 * a * s / h))
    assert activation_bytes_per_layer(s, b, h, a, 4 * h, h, tp=t, sequence_parallel=True, recompute="selective",
                                      **kw) == pytest.approx(sbh / t * 34)
    assert activation_bytes_per_layer(s, b, h, a, 4 * h, h, tp=t, recompute="full", **kw) == pytest.approx(2 * sbh)


def test_zero3_shards_states_over_dp():
    base = dict(gpu="h100-sxm", seq_len=1024, micro_batch=1)
    one = training_memory(LLAMA8, TrainingPlan(n_gpus=1, **base), 80e9)
    for dp in (8, 64):
        z3 = training_memory(LLAMA8, TrainingPlan(n_gpus=dp, dp=dp, zero=3, **base), 80e9)
        states_one = one.weight_bytes + one.gradient_bytes + one.optimizer_bytes
        states_z3 = z3.weight_bytes + z3.gradient_bytes + z3.optimizer_bytes
        assert states_z3 == pytest.approx(states_one / dp, rel=1e-9)
        assert z3.activation_bytes == pytest.approx(one.activation_bytes)
    # 18 bytes per parameter: bf16 weights, fp32 main grads, fp32 master and two moments.
    assert states_bytes_per_param(TrainingPlan(n_gpus=1, **base)) == 18
    assert (one.weight_bytes + one.gradient_bytes + one.optimizer_bytes) / 8.03e9 == pytest.approx(18, rel=0.01)


def test_zero_stages_shrink_memory_monotonically():
    peaks = [training_memory(LLAMA8, TrainingPlan(gpu="h100-sxm", n_gpus=8, dp=8, zero=z, seq_len=2048), 80e9)
             .peak_memory_bytes for z in range(4)]
    assert peaks == sorted(peaks, reverse=True) and peaks[3] < peaks[0] / 3


def test_pipeline_schedule_sets_in_flight_activations():
    kw = dict(gpu="h100-sxm", n_gpus=8, pp=8, seq_len=2048, global_batch=32)
    mem = {s: training_memory(LLAMA8, TrainingPlan(schedule=s, **kw), 80e9) for s in ("gpipe", "1f1b")}
    # GPipe keeps all 32 micro-batches, 1F1B's first stage 8 (= pp).
    assert mem["gpipe"].activation_bytes == pytest.approx(4 * mem["1f1b"].activation_bytes, rel=1e-6)


def test_plan_that_does_not_fit_is_reported_with_numbers():
    r = simulate_training(load_llm("llama-3.1-70b"), TrainingPlan(gpu="h100-sxm", n_gpus=8, dp=8, seq_len=4096), CM)
    assert not r.fits
    assert r.peak_memory_bytes > 70e9 * 18 > 80e9
    assert r.summary()["memory"]["fits"] is False


def test_dp_all_reduce_equals_ring_formula_when_nothing_overlaps():
    dp, params = 8, 1e9
    plan = TrainingPlan(gpu="h100-sxm", n_gpus=dp, dp=dp, seq_len=1024, bucket_bytes=1e12, grad_dtype="bf16")
    chunk = ChunkCost(0, 1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, params, 0.0, 0.0)
    devices, _ = replay_iteration(plan, [chunk], CM, plan_groups(plan, 8))
    s, bw, lat = 2 * params, CM.links.intra_bandwidth_bytes_per_s, CM.links.intra_latency_s
    ring = 2 * (dp - 1) / dp * s / bw + 2 * (dp - 1) * lat      # Patarasuk & Yuan 2009
    assert devices[0]["grads_done_s"] - devices[0]["ops_end_s"] == pytest.approx(ring)


def test_dp_across_nodes_uses_the_nic():
    plan = TrainingPlan(gpu="h100-sxm", n_gpus=64, tp=8, dp=8, seq_len=1024)
    g = plan_groups(plan, 8)
    assert (g.tp.link, g.dp.link, g.dp.per_node) == ("nvlink", "nic", 1)


def test_shared_link_splits_bandwidth():
    env = simpy.Environment()
    link = SharedLink(env, "nic")
    ends = []
    for work in (1.0, 1.0, 0.5):
        link.transfer(work).callbacks.append(lambda _: ends.append(env.now))
    env.run()
    # Three flows at rate 1/3 until the 0.5 one ends at 1.5, then two at 1/2 until 2.5.
    assert ends == pytest.approx([1.5, 2.5, 2.5])


@pytest.mark.parametrize("change,field", [
    (dict(n_gpus=16), "n_gpus"), (dict(tp=3, n_gpus=3), "tp"), (dict(pp=5, n_gpus=5), "pp"),
    (dict(ep=2, dp=2, n_gpus=2), "ep"), (dict(global_batch=3, dp=2, n_gpus=2), "global_batch"),
    (dict(schedule="bogus"), "schedule"), (dict(zero=4), "zero"), (dict(recompute="some"), "recompute"),
])
def test_bad_plans_raise_one_line(change, field):
    kw = dict(gpu="h100-sxm", n_gpus=1, seq_len=1024) | change
    with pytest.raises(PlanError, match=field) as err:
        validate_plan(TrainingPlan(**kw), LLAMA8)
    assert "\n" not in str(err.value)


def test_embedding_backward_and_data_parallel_grad_scale_are_priced():
    """The first chunk's backward writes the embedding's dense gradient (and, tied, adds it into the LM head's),
    and data parallelism below ZeRO-3 scales every gradient once before its reduction: both streaming passes
    are in the backward weight time, at the calibrated streaming rate, and nowhere else."""
    from dataclasses import replace

    from simcluster.training.ops import chunk_cost, streaming_op

    cm = cost_model_for("h200-sxm", "calibrated")
    llm = load_llm("llama-3.2-1b")
    assert llm.tie_embeddings

    def cost(llm, dp, zero=0, index=0, n_chunks=1):
        plan = TrainingPlan(gpu="h200-sxm", n_gpus=dp, dp=dp, zero=zero, seq_len=2048, micro_batch=1,
                            global_batch=dp, param_dtype="fp32", grad_dtype="fp32", master_weights=False)
        return chunk_cost(llm, plan, cm, plan_groups(plan, 8), index, n_chunks)

    one, two = cost(llm, 1), cost(llm, 2)
    params = one.dense_params
    scale = cm.op(streaming_op("dp.grad_scale", 2.0 * params * 4.0, 0.0), cuda_graphs=False).time_s
    assert two.backward_weight_s - one.backward_weight_s == pytest.approx(scale, rel=1e-6)
    assert cost(llm, 2, zero=3).backward_weight_s != two.backward_weight_s      # FSDP: no separate pass
    table = llm.vocab_size * llm.hidden_size
    untied = replace(llm, tie_embeddings=False)
    tied_s = cm.op(streaming_op("e", table * 16.0, 0.0), cuda_graphs=False).time_s
    untied_s = cm.op(streaming_op("e", table * 4.0, 0.0), cuda_graphs=False).time_s
    # Untying also gives the LM head its own fp32 gradient cast (amp.grad_cast, 6 B a weight).
    head_cast_s = (cm.op(streaming_op("c", (params + table) * 6.0, 0.0), cuda_graphs=False).time_s
                   - cm.op(streaming_op("c", params * 6.0, 0.0), cuda_graphs=False).time_s)
    untied_cost = cost(untied, 1)
    assert one.backward_weight_s - untied_cost.backward_weight_s == pytest.approx(
        tied_s - untied_s - head_cast_s, rel=0.02)
    # Later pipeline chunks hold no embedding: no embedding pass there.
    last = cost(llm, 1, index=1, n_chunks=2)
    assert last.backward_weight_s < one.backward_weight_s
