"""The overlap slowdown κ read from the measured overlap.csv (calibrate/overlap.py)."""

import pandas as pd
import pytest

from simcluster import catalog
from simcluster.cost.overlap import DDP_BUCKET_BYTES, OverlapTableError, overlap_slowdown, read_overlap

MEASURED = catalog.profiles_dir() / "measured" / "h200-sxm" / "overlap.csv"


@pytest.mark.skipif(not MEASURED.exists(), reason="no overlap measurements")
def test_measured_layer_slowdown_is_the_layer_mix_row():
    table = pd.read_csv(MEASURED)
    for ws in (2, 4):
        row = table[(table.workload == "layer_mix") & (table.world_size == ws) & (table.collective == "all_reduce")
                    & (table.message_bytes == DDP_BUCKET_BYTES)].iloc[0]
        k = overlap_slowdown("h200-sxm", ("all_reduce",), ws)
        assert k.slowdown == pytest.approx(row.slowdown) and k.source == f"measured h200-sxm ws={ws}"
        # NCCL beside a layer's kernels costs it tens of percent on H200 (not a rounding error, not a halt).
        assert 0.1 < k.slowdown < 1.0
    # More ranks, more NCCL channels: the slowdown grows from 2 to 4 GPUs; 8 takes the nearest measured (4).
    assert overlap_slowdown("h200-sxm", ("all_reduce",), 4).slowdown > overlap_slowdown("h200-sxm", ("all_reduce",), 2).slowdown
    assert overlap_slowdown("h200-sxm", ("all_reduce",), 8).source.endswith("ws=4")
    # FSDP's pair is the mean of its two collectives; a larger all-reduce message slows the layer more.
    both = overlap_slowdown("h200-sxm", ("all_gather", "reduce_scatter"), 2, 64 * 2**20).slowdown
    ag = overlap_slowdown("h200-sxm", ("all_gather",), 2, 64 * 2**20).slowdown
    rs = overlap_slowdown("h200-sxm", ("reduce_scatter",), 2, 64 * 2**20).slowdown
    assert both == pytest.approx((ag + rs) / 2)
    assert overlap_slowdown("h200-sxm", ("all_reduce",), 2, 2**28).slowdown > overlap_slowdown("h200-sxm", ("all_reduce",), 2).slowdown


@pytest.mark.skipif(not MEASURED.exists(), reason="no overlap measurements")
def test_a_gpu_without_measurements_borrows_the_nearest_and_says_so():
    k = overlap_slowdown("h100-sxm", ("all_reduce",), 2)
    assert k.source == "transferred from h200-sxm ws=2"
    assert k.slowdown == overlap_slowdown("h200-sxm", ("all_reduce",), 2).slowdown
    assert overlap_slowdown("h200-sxm", ("send_recv",), 2).source == "none"


def test_a_table_without_its_columns_is_named(tmp_path):
    bad = tmp_path / "overlap.csv"
    bad.write_text("world_size,workload\n2,gemm\n")
    with pytest.raises(OverlapTableError, match=r"overlap.csv: missing column 'collective'"):
        read_overlap(bad)
