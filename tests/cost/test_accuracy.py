"""Accuracy of the calibrated cost model on held-out measurements (profiles/measured/<gpu>/).

Kernel families are fitted on the fit split of simcluster/cost/split.py and scored on held-out
shapes; whole-model forwards are never fitted, but for each model's eager host probe (one
sequence decoding at context 512), which gives the framework's host time per kernel and is never
scored. Thresholds are those of issue 3.
"""

import functools

import numpy as np
import pandas as pd
import pytest

from simcluster.cost.fit import ape
from simcluster.cost.tables import load_tables, measured_gpus, measured_root
from simcluster.hardware.gpu import load_gpu
from simcluster.report.accuracy import accuracy_report

GEMM_MAPE_PCT = 5.0
ATTENTION_MAPE_PCT = 8.0
COLLECTIVES_MAPE_PCT = 10.0
FORWARD_MAPE_PCT = 7.0

GPUS = measured_gpus()


@functools.lru_cache(maxsize=None)
def _report(name: str):
    gpu = load_gpu(name)
    summary, preds = accuracy_report(load_tables(gpu.name), gpu)
    return {r["family"]: r for r in summary}, preds


@pytest.fixture(scope="module", params=GPUS)
def report(request):
    return _report(request.param)


def _mape(preds, families):
    g = preds[preds["family"].isin(families)]
    if len(g) == 0:
        pytest.skip(f"no held-out rows of {families}")
    return float(ape(g["predicted_s"], g["measured_s"]).mean()), len(g)


def test_measured_profiles_exist():
    assert {"h100-sxm"} <= set(GPUS)


def test_gemm_heldout_families(report):
    _, preds = report
    mape, n = _mape(preds, ["gemm_bf16", "gemm_fp8"])
    assert n >= 100
    assert mape <= GEMM_MAPE_PCT


@pytest.mark.parametrize("family", ["attention_prefill", "attention_decode"])
def test_attention_heldout_points(report, family):
    mape, n = _mape(report[1], [family])
    assert n >= 20
    assert mape <= ATTENTION_MAPE_PCT


@pytest.mark.parametrize("family", ["attention_prefill_sdpa", "attention_decode_sdpa"])
def test_sdpa_attention_heldout_points(report, family):
    """Attention through torch's default SDPA dispatch, as the plain-torch benchmark runs it;
    skipped for a GPU whose attention_*_sdpa.csv is not measured yet."""
    mape, n = _mape(report[1], [family])
    assert n >= 20
    assert mape <= ATTENTION_MAPE_PCT


def test_collectives_heldout_sizes(report):
    mape, n = _mape(report[1], ["collectives"])
    assert mape <= COLLECTIVES_MAPE_PCT


def test_heldout_shapes_are_not_fitted(report):
    """The split is by shape: no held-out GEMM (n, k) family reaches the 'measured' path."""
    preds = report[1]
    gemm = preds[preds["family"].str.startswith("gemm")]
    assert len(gemm) and (gemm["method"] == "fitted").all()


def test_whole_model_prefill_threshold(report):
    """Prefill forwards (eager: host-bound at one short prompt, device-bound from ~2k tokens),
    priced as the plain-torch benchmark runs (llm.ops.PLAIN_TORCH)."""
    mape, n = _mape(report[1], ["forward_prefill"])
    assert n >= 10
    assert mape <= FORWARD_MAPE_PCT


def _sdpa_measured(gpu: str) -> bool:
    return (measured_root() / gpu / "attention_decode_sdpa.csv").is_file()


# Without attention_*_sdpa tables the benchmark's attention is priced from flash-pinned ones while
# its SDPA dispatches cuDNN on Hopper (up to ~2x faster at large batch x context).
NO_SDPA = pytest.mark.xfail(strict=True, reason="attention_*_sdpa.csv not measured: the model's "
                            "cuDNN attention is priced from flash-pinned tables")


@pytest.mark.parametrize("gpu", [pytest.param(g, marks=() if _sdpa_measured(g) else NO_SDPA) for g in GPUS])
def test_whole_model_decode_threshold(gpu):
    """Decode forwards, graph-replayed and eager, attention priced from the SDPA-dispatch tables;
    the graph replay's idle time between kernels comes from graph_gap.csv."""
    mape, n = _mape(_report(gpu)[1], ["forward_decode"])
    assert n >= 10
    assert mape <= FORWARD_MAPE_PCT


def test_benchmark_implementation_lists_its_kernels():
    """The plain-torch description does the same arithmetic as the fused serving form, in more
    kernels: q/k/v and gate/up split, 10-kernel RoPE, and a K/V write of every new token."""
    from dataclasses import replace

    from simcluster.llm.ops import PLAIN_TORCH, Batch, forward_ops, kv_bytes_per_token, total_flops
    from simcluster.llm.spec import load_llm
    llm = load_llm("llama-3.1-8b")
    batch = Batch(decode=(2048,) * 8)
    fused = forward_ops(llm, batch)
    plain = forward_ops(llm, batch, impl=replace(PLAIN_TORCH, kv_cache_write=True))
    gemm_flops = lambda ops: sum(o.flops * o.repeat for o in ops if o.kind == "gemm")  # noqa: E731
    assert gemm_flops(plain) == pytest.approx(gemm_flops(fused))
    names = {o.name for o in plain}
    assert {"attn.q_proj", "attn.k_proj", "attn.v_proj", "ffn.gate_proj", "ffn.up_proj"} <= names
    assert "attn.qkv_proj" not in names and "attn.kv_cache_write" not in {o.name for o in fused}
    write = next(o for o in plain if o.name == "attn.kv_cache_write")
    # Read once and written once: twice the KV bytes of the 8 new tokens over the whole stage.
    assert write.bytes * write.repeat == pytest.approx(2 * 8 * kv_bytes_per_token(llm))
    kernels = lambda ops: sum(o.kernels * o.repeat for o in ops)  # noqa: E731
    # Per layer: +3 GEMMs, +9 RoPE kernels, +2 cache copies, silu and mul as two ops.
    assert kernels(plain) - kernels(fused) == 15 * llm.n_layers
    assert total_flops(plain) > total_flops(fused) * 0.99


def test_launch_gaps_are_charged_per_kernel():
    """An op of k tiny kernels costs k launch gaps, not one (eager torch launches each)."""
    from dataclasses import replace

    from simcluster.cost.model import CostModel, LaunchOverhead
    from simcluster.llm.ops import gemm
    cm = CostModel(load_gpu("h100-sxm"), launch=LaunchOverhead(eager_s=10e-6, cuda_graph_s=1e-6))
    tiny = replace(gemm("x", 1, 64, 64, "bf16", repeat=3), kernels=5)
    assert cm.op(tiny, cuda_graphs=False).time_s == pytest.approx(3 * 5 * 10e-6)
    assert cm.op(tiny, cuda_graphs=True).time_s == pytest.approx(3 * max(5e-6, cm.op(tiny).kernel_s))


def test_predictions_are_positive_and_finite(report):
    preds = report[1]
    assert np.isfinite(preds["predicted_s"]).all() and (preds["predicted_s"] > 0).all()


# No issue threshold for the 'transferred' path; this guard keeps the transfer rule useful.
TRANSFER_GEMM_GUARD_PCT = 10.0


@pytest.mark.skipif(len(GPUS) < 2, reason="needs two measured GPUs")
def test_transferred_gemm_from_the_other_gpu():
    from simcluster.cost.calibration import load_calibration
    from simcluster.report.accuracy import transfer_predictions
    target, source = load_gpu(GPUS[0]), load_gpu(GPUS[1])
    preds = transfer_predictions(load_calibration(source), load_tables(target.name), target)
    g = preds[preds["family"].str.startswith("gemm")]
    assert len(g) >= 100 and (g["method"] == "transferred").all()
    assert float(ape(g["predicted_s"], g["measured_s"]).mean()) <= TRANSFER_GEMM_GUARD_PCT


@pytest.mark.parametrize("gpu", GPUS)
def test_eager_forwards_are_scored_on_their_probes_host(gpu):
    """Every eager row but the probes is held out and priced by the host-issue pipeline: none is
    left to the bare launch gap, each eager phase is within FORWARD_MAPE_PCT on its own, and the
    host-bound eager decode rows (time set by Python, not by the GPU) are within it too."""
    from simcluster.report.accuracy import is_forward_probe
    frame = load_tables(gpu).get("model_forward.csv")
    preds = _report(gpu)[1]
    fwd = preds[preds["family"].str.startswith("forward")]
    assert not fwd["family"].str.endswith("_unprobed").any()
    probes = frame[[is_forward_probe(r) for r in frame.itertuples()]]
    assert set(probes["model"]) == set(frame["model"])
    assert not fwd["shape"].isin([f"{r.model} decode b1 s1 c512 eager" for r in probes.itertuples()]).any()
    eager = fwd[fwd["shape"].str.endswith(" eager")]
    assert len(eager) == (frame["mode"] == "eager").sum() - len(probes)
    for family in ("forward_prefill", "forward_decode"):
        g = eager[eager["family"] == family]
        assert len(g) >= 15
        assert float(ape(g["predicted_s"], g["measured_s"]).mean()) <= FORWARD_MAPE_PCT
    # Every eager row was timed until its median was known to +-6% (95%).
    rows = frame[frame["mode"] == "eager"]
    low, high = (pd.to_numeric(rows[c]) for c in ("time_ci_low_s", "time_ci_high_s"))
    assert ((high - low) / 2 / rows.time_s).max() <= 0.06
