"""The calibrated kernel model: methods, transfer rule, synthetic-law recovery, speed, fit.json."""

import math
import time

import numpy as np
import pandas as pd
import pytest

from simcluster.cost import cost_model_for
from simcluster.cost.calibrated import CalibratedKernels, nearest_measured_gpu
from simcluster.cost.calibration import Calibration, fit_calibration, load_calibration, read_fit, write_fit
from simcluster.cost.gemm_fit import GemmDtypeFit
from simcluster.cost.tables import MeasuredTableError, load_tables, read_measured_csv
from simcluster.hardware.gpu import load_gpu
from simcluster.llm.ops import Batch, decode_attention_op, forward_ops, gemm
from simcluster.llm.spec import load_llm

H100 = load_gpu("h100-sxm")


@pytest.fixture(scope="module")
def h100_kernels():
    return CalibratedKernels(H100, load_calibration(H100))


def test_catalog_gemm_is_measured_and_unseen_family_is_fitted(h100_kernels):
    t, method = h100_kernels.time_s(gemm("x", 1024, 4096, 4096, "bf16"))
    assert method == "measured"
    row = load_tables("h100-sxm").get("gemm.csv").query("m == 1024 and n == 4096 and k == 4096 and dtype == 'bf16'")
    assert t == pytest.approx(float(row["time_s"].iloc[0]), rel=0.01)
    t2, method2 = h100_kernels.time_s(gemm("y", 1024, 4000, 4000, "bf16"))
    assert method2 == "fitted" and 0.7 * t < t2 < 1.1 * t


def test_step_methods_per_gpu():
    llm = load_llm("llama-3.1-8b")
    ops = forward_ops(llm, Batch(prefill=((512, 0),), decode=(1024,) * 8))
    for gpu, allowed in (("h100-sxm", {"measured", "fitted"}), ("a100-sxm-80gb", {"transferred"})):
        cm = cost_model_for(gpu)
        methods = {e.method for e in cm.iteration(ops).ops}
        assert methods <= allowed | {"roofline"} and methods & allowed, (gpu, methods)


def test_transfer_prefers_same_architecture():
    measured = [load_gpu("h100-sxm"), load_gpu("h200-sxm")]
    assert nearest_measured_gpu(load_gpu("h100-pcie"), measured).name == "h100-sxm"
    # No Ampere measured: the closest peaks win (A100 is far nearer the H100 than the H200).
    assert nearest_measured_gpu(load_gpu("a100-sxm-80gb"), measured).name == "h100-sxm"
    assert nearest_measured_gpu(load_gpu("a100-sxm-80gb"), []) is None


def test_transferred_gpu_scales_with_its_own_peaks():
    """A memory-bound decode on a GPU with less HBM bandwidth takes longer than on the source."""
    llm = load_llm("llama-3.1-8b")
    op = decode_attention_op(llm, 64, 64 * 4096, layers=1)
    t_h100, _ = cost_model_for("h100-sxm").kernels.time_s(op)
    t_a100, method = cost_model_for("a100-sxm-80gb").kernels.time_s(op)
    assert method == "transferred"
    ratio = H100.hbm_bandwidth_bytes_per_s / load_gpu("a100-sxm-80gb").hbm_bandwidth_bytes_per_s
    assert t_a100 / t_h100 == pytest.approx(ratio, rel=0.2)


def test_gemm_fit_recovers_a_roofline_law():
    """Times drawn from an exact two-roof law are predicted within 3% on a family left out."""
    gpu = H100
    rng = np.random.default_rng(0)
    ms = 2.0 ** np.arange(0, 15)
    fams = [(n, k) for n in (1024, 2048, 4096, 8192, 16384) for k in (1024, 2048, 4096, 8192)]
    held = (4096, 4096)

    def law(m, n, k):
        return 4e-6 + max(2 * m * n * k / (0.7 * 989e12), 2 * (m * k + n * k + m * n) / (0.85 * 3.35e12))
    rows = [(m, n, k, law(m, n, k) * math.exp(rng.normal(0, 0.01))) for n, k in fams for m in ms if (n, k) != held]
    m, n, k, t = map(np.array, zip(*rows))
    fit = GemmDtypeFit.fit(m, n, k, t, "bf16", gpu)
    errs = [abs(fit.predict_s(mm, *held, "bf16", gpu)[0] / law(mm, *held) - 1) for mm in ms]
    assert max(errs) < 0.06 and np.mean(errs) < 0.03


def test_fit_json_round_trip(tmp_path):
    tables = load_tables("h100-sxm")
    cal = fit_calibration(tables, H100, "fit")
    path = write_fit(cal, tmp_path)
    back = read_fit(path)
    assert back.provenance["split"] == "fit" and "gemm.csv" in back.provenance["sources_sha256"]
    a, b = CalibratedKernels(H100, cal), CalibratedKernels(H100, back)
    for op in (gemm("x", 777, 5000, 3000, "bf16"), gemm("y", 64, 4096, 14336, "fp8")):
        (ta, ma), (tb, mb) = a.time_s(op), b.time_s(op)
        assert ta == pytest.approx(tb, rel=1e-9) and ma == mb
    assert isinstance(Calibration.from_json(cal.to_json()), Calibration)


def test_time_s_is_fast_for_many_distinct_ops(h100_kernels):
    llm = load_llm("llama-3.1-8b")
    ops = [decode_attention_op(llm, b, b * c, layers=32) for b in range(1, 41) for c in range(500, 4500, 100)]
    h100_kernels.time_s(ops[0])
    # CPU time of this process, so other jobs on a shared runner do not count against it.
    start = time.process_time()
    for op in ops:
        h100_kernels.time_s(op)
    per_call_s = (time.process_time() - start) / len(ops)
    assert per_call_s < 200e-6        # ~20 µs on a quiet machine


def test_bad_measured_csv_names_row_and_column(tmp_path):
    path = tmp_path / "gemm.csv"
    path.write_text("m,n,k,dtype,time_s,source\n1,2,3,bf16,1e-6,x\n4,5,6,bf16,fast,x\n")
    with pytest.raises(MeasuredTableError, match=r"row 3 column 'time_s'"):
        read_measured_csv(path)
    path.write_text("m,n,dtype,time_s,source\n1,2,bf16,1e-6,x\n")
    with pytest.raises(MeasuredTableError, match=r"missing column 'k'"):
        read_measured_csv(path)


def test_launch_overhead_from_launch_csv():
    cm = cost_model_for("h100-sxm")
    frame = load_tables("h100-sxm").get("launch.csv")
    eager = frame[frame["mode"] == "eager"].sort_values("n_kernels")
    assert cm.launch.eager_s == pytest.approx(float(eager["time_s"].iloc[-1] / eager["n_kernels"].iloc[-1]), rel=0.2)
    assert cm.launch.cuda_graph_s < cm.launch.eager_s


def test_choose_bandwidth_prefers_wide_kernels_for_smooth_residuals():
    """Leave-one-group-out CV: residuals that vary slowly across groups favour a wide kernel."""
    from simcluster.cost.fit import choose_bandwidth
    x = np.array([[m, n] for n in range(8) for m in range(6)], float)
    smooth = 0.1 * np.sin(x[:, 1] / 3.0)
    groups = x[:, 1].astype(int)
    wide, narrow = np.array([1.0, 2.0]), np.array([1.0, 0.2])
    assert choose_bandwidth(x, smooth, groups, [narrow, wide]) is wide


def test_sdpa_dispatch_prices_from_its_own_tables_else_says_flash():
    """Implementation.attention == 'sdpa' (the plain-torch benchmark) reads attention_*_sdpa;
    without them the flash curve prices it and the method names the substitution."""
    import copy

    from simcluster.cost.attention_fit import fit_decode
    llm = load_llm("llama-3.1-8b")
    flash_op = decode_attention_op(llm, 32, 32 * 2048, layers=1)
    sdpa_op = decode_attention_op(llm, 32, 32 * 2048, layers=1, attention="sdpa")
    assert "dispatch" not in flash_op.shape and sdpa_op.shape["dispatch"] == "sdpa"
    cal = copy.copy(load_calibration(H100))
    cal.prefill_sdpa = cal.decode_sdpa = None
    without = CalibratedKernels(H100, cal)
    t_flash, m_flash = without.time_s(flash_op)
    t_sub, m_sub = without.time_s(sdpa_op)
    assert t_sub == t_flash and m_sub == m_flash + " (flash table for sdpa)"
    # A synthetic sdpa table exactly half as slow as flash: the sdpa op follows it, flash does not.
    frame = load_tables("h100-sxm").get("attention_decode.csv").copy()
    frame["time_s"] = frame["time_s"] / 2
    cal.decode_sdpa = fit_decode(frame, H100)
    with_sdpa = CalibratedKernels(H100, cal)
    t_sdpa, m_sdpa = with_sdpa.time_s(sdpa_op)
    assert m_sdpa == m_flash and t_sdpa == pytest.approx(t_flash / 2, rel=0.02)
    assert with_sdpa.time_s(flash_op) == (t_flash, m_flash)


def test_misaligned_gemm_takes_its_measured_slowdown():
    """Shapes off 16-byte row alignment take the slowdown measured on other misaligned shapes, by
    kind (k: A and W rows; n: C rows only); aligned shapes are untouched."""
    from simcluster.cost.gemm_fit import fit_gemm, misalignment
    assert misalignment(4096, 2500, "bf16") == "k" and misalignment(2500, 4096, "bf16") == "n"
    assert misalignment(2500, 2500, "bf16") == "k" and misalignment(4096, 4096, "bf16") is None
    assert misalignment(4104, 4096, "fp8") == "n"     # fp8: 16 elements to 16 bytes
    table = load_tables("h100-sxm").get("gemm.csv")
    gemm = table[table["source"] != "off_grid"]        # the catalog widths: all aligned
    plain = fit_gemm(gemm, H100)["bf16"]
    # Synthetic misaligned table: 1.8x the aligned prediction for k, 1.1x for n.
    rows = [(m, n, k) for m in (1, 64, 4096) for n, k in ((4096, 1500), (3500, 3500), (1500, 4096))]
    slow = {"k": 1.8, "n": 1.1}
    frame = pd.DataFrame([{"m": m, "n": n, "k": k, "dtype": "bf16",
                           "time_s": plain.predict_s(m, n, k, "bf16", H100)[0] * slow[misalignment(n, k, "bf16")]}
                          for m, n, k in rows])
    fit = fit_gemm(gemm, H100, frame)["bf16"]
    for m, n, k, factor in ((48, 11000, 2500, 1.8), (2500, 2500, 2500, 1.8), (512, 4100, 4096, 1.1),
                            (1024, 4096, 4096, 1.0)):
        assert fit.predict_s(m, n, k, "bf16", H100)[0] == pytest.approx(
            factor * plain.predict_s(m, n, k, "bf16", H100)[0], rel=1e-9)
    assert fit_gemm(gemm, H100, frame)["fp8"].misaligned == {}
    # A measured misaligned family (off-grid rows fitted, split 'all') keeps its own residual.
    with_off = fit_gemm(table, H100, frame)["bf16"]
    t, covered = with_off.predict_s(48, 11000, 2500, "bf16", H100)
    assert covered and t == with_off._aligned_s(48, 11000, 2500, "bf16", H100)[0]
    again = type(fit).from_json(fit.to_json())
    assert again.predict_s(48, 11000, 2500, "bf16", H100) == fit.predict_s(48, 11000, 2500, "bf16", H100)


def test_kernel_switch_cost_is_added_once_per_op_occurrence():
    """kernel_switch.csv: mixed-chain per-kernel time minus the single-op chains' mean, charged
    once per op occurrence (a multi-kernel op's table time already holds its inner switches)."""
    from dataclasses import replace

    from simcluster.cost.calibration import switch_s
    from simcluster.cost.model import CostModel, LaunchOverhead
    frame = pd.DataFrame({"chain": ["same", "same", "mixed"], "op": ["add", "neg", "add+neg"],
                          "n_kernels": [64, 64, 128], "time_s": [64e-6, 128e-6, 256e-6]})
    assert switch_s(frame) == pytest.approx(2e-6 - 1.5e-6)
    assert switch_s(frame[frame["chain"] == "same"]) is None
    op = replace(gemm("x", 4096, 4096, 4096, "bf16", repeat=3), kernels=2)
    base = CostModel(H100, launch=LaunchOverhead(eager_s=1e-6, cuda_graph_s=1e-6))
    switched = CostModel(H100, launch=LaunchOverhead(eager_s=1e-6, cuda_graph_s=1e-6, switch_s=0.5e-6))
    assert switched.op(op).time_s == pytest.approx(base.op(op).time_s + 3 * 0.5e-6)
