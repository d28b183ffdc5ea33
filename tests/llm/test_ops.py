"""Operator lists against closed forms: FLOPs of a forward pass, KV bytes per token, TP/EP splits."""

import pytest

from simcluster.llm import load_llm, params
from simcluster.llm.memory import serving_memory, weight_bytes_per_gpu
from simcluster.llm.ops import Batch, expected_experts_touched, forward_ops, kv_bytes_per_token, total_flops


def matmul_params(spec):
    # every weight a token multiplies in a dense model, the input embedding lookup excluded
    return params.total_params(spec) - spec.vocab_size * spec.hidden_size


@pytest.mark.parametrize("name", ["llama-3.1-8b", "llama-3.1-70b", "qwen3-32b"])
def test_dense_prefill_flops_match_2N_per_token_plus_attention(name):
    spec = load_llm(name)
    s = 1024
    ops = forward_ops(spec, Batch(prefill=((s, 0),)))
    attention = 2 * spec.n_layers * spec.n_heads * spec.head_dim * 2 * s * (s + 1) / 2
    # logits only for the last token: lm_head counted once, not per prompt token
    linear = 2 * (matmul_params(spec) - spec.vocab_size * spec.hidden_size) * s + 2 * spec.vocab_size * spec.hidden_size
    gemm_attn = sum(o.flops * o.repeat for o in ops if o.kind in ("gemm", "attention_prefill"))
    assert gemm_attn == pytest.approx(linear + attention, rel=0.01)


def test_kv_bytes_per_token_closed_forms():
    llama = load_llm("llama-3.1-8b")
    assert kv_bytes_per_token(llama) == 2 * 32 * 8 * 128 * 2            # 128 KiB per token
    assert kv_bytes_per_token(llama, tp=8) == 2 * 32 * 1 * 128 * 2
    assert kv_bytes_per_token(llama, tp=16) == 2 * 32 * 1 * 128 * 2     # kv heads replicated past 8
    ds = load_llm("deepseek-v3")
    assert kv_bytes_per_token(ds) == 61 * (512 + 64) * 2                # MLA latent: 70,272 bytes
    assert kv_bytes_per_token(ds, tp=8) == kv_bytes_per_token(ds)       # replicated across TP


def test_tp_splits_linear_flops_and_adds_two_allreduces_per_layer():
    spec = load_llm("llama-3.1-70b")
    one = forward_ops(spec, Batch(decode=(1000,) * 16))
    eight = forward_ops(spec, Batch(decode=(1000,) * 16), tp=8)
    g1 = sum(o.flops * o.repeat for o in one if o.kind == "gemm" and o.name != "lm_head")
    g8 = sum(o.flops * o.repeat for o in eight if o.kind == "gemm" and o.name != "lm_head")
    assert g8 == pytest.approx(g1 / 8, rel=0.01)
    ar = [o for o in eight if o.collective == "all_reduce"]
    assert len(ar) == 1 and ar[0].repeat == 2 * spec.n_layers and ar[0].message_bytes == 16 * spec.hidden_size * 2


def test_moe_active_flops_and_expert_parallel_all_to_all():
    spec = load_llm("mixtral-8x7b")
    m = 4096
    ops = forward_ops(spec, Batch(prefill=((m, 0),)))
    moe = next(o for o in ops if o.kind == "moe")
    assert moe.flops == pytest.approx(2 * 3 * spec.hidden_size * spec.moe.expert_intermediate_size * m * 2)
    ep_ops = forward_ops(spec, Batch(prefill=((m, 0),)), tp=1, ep=8)
    a2a = [o for o in ep_ops if o.collective == "all_to_all"]
    assert len(a2a) == 2 and all(o.group_size == 8 for o in a2a)
    assert next(o for o in ep_ops if o.kind == "moe").flops == pytest.approx(moe.flops / 8)


def test_expected_experts_touched_limits():
    assert expected_experts_touched(8, 2, 1) == pytest.approx(2)
    assert expected_experts_touched(256, 8, 100000) == pytest.approx(256)
    assert expected_experts_touched(256, 8, 0) == 0


def test_pipeline_stages_partition_layers():
    spec = load_llm("llama-3.1-8b")
    b = Batch(decode=(512,) * 8)
    whole = total_flops(forward_ops(spec, b))
    staged = sum(total_flops(forward_ops(spec, b, pp=4, stage=s)) for s in range(4))
    assert staged == pytest.approx(whole, rel=1e-9)


def test_weights_and_kv_capacity():
    spec = load_llm("llama-3.1-70b")
    # bf16 70.6B parameters over TP8 ≈ 17.6 GB per GPU
    assert weight_bytes_per_gpu(spec, tp=8) == pytest.approx(params.total_params(spec) * 2 / 8, rel=0.01)
    mem = serving_memory(spec, 80 * 2**30, tp=1)
    assert not mem.fits
    mem8 = serving_memory(spec, 80 * 2**30, tp=8)
    assert mem8.fits and mem8.kv_capacity_tokens > 100_000
