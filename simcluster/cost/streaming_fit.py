"""Training's large streaming kernels, fitted from train_kernels.csv (calibrate/train_kernels.py):
the AdamW update (fused and foreach) and the fp32 cross-entropy over a vocabulary of logits.

Each is a rate in bytes per second over the bytes its measurement counts (AdamW: 28 B per fp32
parameter, read and written; cross-entropy: 14 B per logit), interpolated linearly in log bytes
between the measured sizes and held flat beyond them. The rates are nearly flat in size (fused
AdamW 3.35-3.66 TB/s on H200, 72% of HBM peak; foreach 1.2-1.3 TB/s; the loss forward 1.9-2.1
TB/s), which is why a residual add's copy rate (~90% of peak) mis-times them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

# Kernel names the training ops ask for (Op.shape['kernel']).
ADAMW_FUSED, ADAMW_FOREACH = "adamw.fused", "adamw.foreach"
LOSS_FORWARD, LOSS_BACKWARD = "cross_entropy.forward", "cross_entropy.backward"


def fit_streaming(frame: pd.DataFrame) -> dict[str, list[tuple[float, float]]]:
    """{kernel: [(bytes, bytes_per_s), ...] sorted by bytes}. The loss backward is the
    forward + backward row less the forward row of the same size."""
    out: dict[str, list[tuple[float, float]]] = {}
    for impl in ("fused", "foreach"):
        rows = frame[(frame["op"] == "adamw") & (frame["impl"] == impl)]
        if len(rows):
            out[f"adamw.{impl}"] = sorted((float(b), float(b) / float(t)) for b, t in zip(rows["bytes"], rows["time_s"]))
    fwd = frame[frame["op"] == "cross_entropy_fwd"].set_index("elements")
    both = frame[frame["op"] == "cross_entropy_fwd_bwd"].set_index("elements")
    if len(fwd):
        out[LOSS_FORWARD] = sorted((float(r.bytes), float(r.bytes) / float(r.time_s)) for r in fwd.itertuples())
    common = sorted(set(fwd.index) & set(both.index))
    backward = [(float(fwd.loc[n, "bytes"]), float(fwd.loc[n, "bytes"]) / (float(both.loc[n, "time_s"]) - float(fwd.loc[n, "time_s"])))
                for n in common if float(both.loc[n, "time_s"]) > float(fwd.loc[n, "time_s"])]
    if backward:
        out[LOSS_BACKWARD] = sorted(backward)
    return out


def predict_streaming_s(points: list[tuple[float, float]], bytes_: float) -> tuple[float, bool]:
    """(seconds to stream `bytes_`, whether the size lies within the measured range)."""
    if bytes_ <= 0:
        return 0.0, True
    sizes = np.log([p[0] for p in points])
    rates = np.array([p[1] for p in points])
    x = math.log(bytes_)
    rate = float(np.interp(x, sizes, rates))
    return bytes_ / rate, bool(sizes[0] <= x <= sizes[-1])
