"""StepTimer: closed-form attention equals the cost model, interpolation, stages, launch and CPU overheads."""

import pytest

from simcluster.cost import CostModel, RooflineKernels
from simcluster.llm.ops import Batch, forward_ops
from simcluster.serving.step import EXACT_TOKENS, StepTimer


@pytest.mark.parametrize("prefill,decode", [(((512, 0),), ()), ((), (1000,) * 8), (((200, 300), (64, 0)), (700, 90))])
def test_step_equals_the_op_list_priced_by_the_cost_model(llm, roofline, prefill, decode):
    """The timer's cached/closed-form parts add up to pricing the full forward op list."""
    timer = StepTimer(llm, roofline)
    batch = Batch(prefill=prefill, decode=decode)
    new = sum(s for s, _ in prefill)
    ctx = sum(s + c for s, c in prefill)
    pairs = sum(s * (c + (s + 1) / 2) for s, c in prefill)
    got = timer.time_s(len(prefill), new, ctx, pairs, len(decode), sum(decode) + len(decode))
    want = roofline.iteration(forward_ops(llm, batch), True).time_s
    assert got == pytest.approx(want, rel=1e-12)


def test_flops_and_bytes_match_the_op_list(llm, roofline):
    timer = StepTimer(llm, roofline, tp=2)
    times, flops, bytes_ = timer.step(1, 256, 256, 256 * 257 / 2, 4, 4 * 513)
    ops = forward_ops(llm, Batch(prefill=((256, 0),), decode=(512,) * 4), tp=2)
    assert flops == pytest.approx(2 * sum(o.flops * o.repeat for o in ops), rel=1e-12)
    assert bytes_ == pytest.approx(2 * sum(o.bytes * o.repeat for o in ops), rel=1e-12)


def test_interpolated_token_counts_stay_within_a_tenth_of_a_percent(llm, roofline):
    timer = StepTimer(llm, roofline)
    for tokens in (EXACT_TOKENS + 1, 777, 3001, 8000):
        exact = timer._body_exact(tokens)[0][0]
        assert timer.body(tokens)[0][0] == pytest.approx(exact, rel=1e-3)


class Wrapped:
    """Roofline timing behind another class: StepTimer cannot use its closed form and must price
    attention through the cost model (the path calibrated kernels take)."""

    def __init__(self, gpu):
        self.inner = RooflineKernels(gpu)

    def time_s(self, op):
        return self.inner.time_s(op)


def test_other_kernels_price_attention_on_the_snapped_grid_close_to_exact(llm, roofline, h100):
    cost = CostModel(h100, roofline.links, kernels=Wrapped(h100))
    timer = StepTimer(llm, cost)
    exact = StepTimer(llm, roofline)
    for args in ((0, 0, 0, 0.0, 32, 32 * 1500 + 7), (2, 900, 2500, 2e5, 17, 17 * 900)):
        assert timer.time_s(*args) == pytest.approx(exact.time_s(*args), rel=0.01)
    assert timer._attn        # priced through the memo, not the closed form


def test_pipeline_stages_sum_to_the_latency_and_split_the_work(llm, roofline):
    timer = StepTimer(llm, roofline, pp=4)
    times, _, _ = timer.step(0, 0, 0, 0.0, 64, 64 * 1000)
    assert len(times) == 4
    assert sum(times) == pytest.approx(timer.time_s(n_decode=64, decode_ctx=64000))
    single = StepTimer(llm, roofline).time_s(n_decode=64, decode_ctx=64000)
    # Each stage holds a quarter of the layers: the slowest is well under the whole model.
    assert max(times) < 0.4 * single


def test_eager_launch_and_cpu_overhead_cost_more_than_cuda_graphs(llm, roofline):
    graphs = StepTimer(llm, roofline, cuda_graphs=True).time_s(n_decode=1, decode_ctx=100)
    eager = StepTimer(llm, roofline, cuda_graphs=False).time_s(n_decode=1, decode_ctx=100)
    cpu = StepTimer(llm, roofline, cpu_overhead_s=0.003).time_s(n_decode=1, decode_ctx=100)
    assert eager > graphs
    assert cpu == pytest.approx(graphs + 0.003)


@pytest.mark.parametrize("calibrated", [False, True])
def test_packed_attention_computes_every_query_against_every_key(llm, roofline, calibrated):
    """`packed`: one masked attention over the batch, so its attention FLOPs are (all queries) x
    (all keys) x 2·heads·(d_qk + d_v) per layer, n times the varlen FLOPs of n decodes."""
    from simcluster.cost import cost_model_for
    cost = cost_model_for("h100-sxm") if calibrated else roofline
    n, ctx = 8, 8 * 1000
    varlen = StepTimer(llm, cost, cuda_graphs=False)
    packed = StepTimer(llm, cost, cuda_graphs=False, attention_packing="packed")
    per_pair = 2 * llm.n_heads * 2 * llm.head_dim * llm.n_layers
    _, f_var, _ = varlen.step(n_decode=n, decode_ctx=ctx)
    _, f_pack, _ = packed.step(n_decode=n, decode_ctx=ctx)
    # Calibrated kernels price the aggregates snapped to a 1.1 %-spaced grid (StepTimer's memo).
    assert f_pack - f_var == pytest.approx(per_pair * (n - 1) * ctx, rel=0.02 if calibrated else 1e-9)
    # A prefill chunk next to decodes: its queries also meet the decodes' keys, and theirs its keys.
    assert packed.time_s(1, 2048, 2048, 2048 * 2049 / 2, n, ctx) > varlen.time_s(1, 2048, 2048, 2048 * 2049 / 2, n, ctx)
    with pytest.raises(ValueError, match="attention_packing"):
        StepTimer(llm, cost, attention_packing="dense")


def test_graph_padding_prices_the_padded_shape(llm, roofline):
    """A CUDA-graph engine that pads queries to 64 and cached KV to 16384 tokens (transformers'
    continuous batching) costs the same for any batch inside one padded shape, and what the
    unpadded engine costs at the padded token count."""
    plain = StepTimer(llm, roofline, attention_packing="packed")
    padded = StepTimer(llm, roofline, attention_packing="packed", padding_tokens=(64, 16384))
    # Same (64 queries, 16384 + 64 keys) shape: 8 decodes over 1k or 15k cached tokens.
    assert padded.time_s(n_decode=8, decode_ctx=8 + 1000) == pytest.approx(padded.time_s(n_decode=8, decode_ctx=8 + 15000))
    assert padded.time_s(n_decode=8, decode_ctx=8 + 17000) > padded.time_s(n_decode=8, decode_ctx=8 + 15000)
    # The padded token-wise ops and attention are those of the padded shape; logits stay per sequence.
    body = padded.body(64)[0][0] + padded.logits(8)[0]
    attention = plain._packed_attention(64, 16384 + 64)[0] * llm.n_layers
    assert padded.time_s(n_decode=8, decode_ctx=8 + 1000) == pytest.approx(body + attention, rel=1e-12)
    assert padded.time_s(n_decode=8, decode_ctx=1008) > plain.time_s(n_decode=8, decode_ctx=1008)
