"""Chrome / Perfetto trace (JSON trace-event format) of serving iterations, one row per replica."""

from __future__ import annotations

import pandas as pd


def iteration_events(iterations: pd.DataFrame) -> dict:
    """Trace-event JSON: one complete ('X') event per iteration; pid = replica. Times in µs."""
    events = []
    names = {name: i for i, name in enumerate(dict.fromkeys(iterations["replica"]))}
    for name, pid in names.items():
        events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}})
    for row in iterations.itertuples(index=False):
        kind = "mixed" if row.n_prefill and row.n_decode else ("prefill" if row.n_prefill else "decode")
        events.append({
            "name": kind, "ph": "X", "pid": names[row.replica], "tid": 0,
            "ts": row.start_s * 1e6, "dur": row.duration_s * 1e6,
            "args": {"n_prefill": int(row.n_prefill), "prefill_tokens": int(row.prefill_tokens),
                     "n_decode": int(row.n_decode), "kv_used_tokens": int(row.kv_used_tokens)},
        })
    return {"traceEvents": events, "displayTimeUnit": "ms"}
