"""Accuracy against real training steps measured on the lent GPUs (profiles/measured/*/train_step.csv).

Eager-framework overheads (host time per layer, memory outside the model) are fitted on the
llama-3.2-1b rows only; the other rows are held out. Both must be within 10% in time and in peak
memory; the test prints every row's error.
"""

import pytest

from simcluster import catalog
from simcluster.cost import cost_model_for
from simcluster.training.validation import fit_overheads, measured_path, predict_row, read_measurements

GPUS = sorted(p.parent.name for p in (catalog.profiles_dir() / "measured").glob("*/train_step.csv"))
FIT_MODEL = "llama-3.2-1b"


@pytest.mark.parametrize("gpu", GPUS)
def test_measured_steps_within_ten_percent(gpu):
    cm = cost_model_for(gpu, "calibrated")
    rows = read_measurements(measured_path(gpu))
    fit = fit_overheads(rows[rows.model == FIT_MODEL], gpu, cm)
    assert 0 < fit.overheads.host_s_per_layer < 20e-3
    held_out = 0
    worst = {}
    for r in rows.itertuples():
        p = predict_row(r, gpu, cm, fit.overheads)
        split = "fit" if r.model == FIT_MODEL else "held-out"
        held_out += split == "held-out"
        print(f"{gpu} {split:8s} {r.model} {r.strategy} ws={r.world_size} mb={r.micro_batch} s={r.seq_len}: "
              f"time {p['time_error']:+.1%} memory {p['memory_error']:+.1%}")
        for k in ("time_error", "memory_error"):
            worst[(split, k)] = max(worst.get((split, k), 0.0), abs(p[k]))
        assert abs(p["time_error"]) <= 0.10, (r, p)
        assert abs(p["memory_error"]) <= 0.10, (r, p)
    print(gpu, fit.overheads, {f"{a} {b}": f"{v:.1%}" for (a, b), v in worst.items()})
    assert held_out > 0
