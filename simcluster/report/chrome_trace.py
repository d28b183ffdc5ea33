"""Chrome / Perfetto trace (JSON trace-event format) of serving iterations, one process per replica.

Each iteration is a complete ('X') event on the thread of its scheduler (a PP replica has one per
virtual engine); KV-cache use is a counter ('C') track per replica, sampled at every iteration
start. Format: "Trace Event Format" (Google, 2016), the format chrome://tracing and Perfetto read.
"""

from __future__ import annotations

import pandas as pd


def iteration_events(iterations: pd.DataFrame, kv_counters: bool = True) -> dict:
    """Trace-event JSON: one 'X' event per iteration, pid = replica, tid = scheduler; times in µs.

    With kv_counters, a 'C' event per iteration gives the replica's KV-cache use (fraction of the
    scheduler's blocks pinned by sequences) and its used tokens.
    """
    events = []
    names = {name: i for i, name in enumerate(dict.fromkeys(iterations["replica"]))}
    for name, pid in names.items():
        events.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}})
    has_engine = "engine" in iterations.columns
    for row in iterations.itertuples(index=False):
        kind = "mixed" if row.n_prefill and row.n_decode else ("prefill" if row.n_prefill else "decode")
        pid = names[row.replica]
        tid = int(row.engine) if has_engine else 0
        ts = row.start_s * 1e6
        args = {"n_prefill": int(row.n_prefill), "prefill_tokens": int(row.prefill_tokens),
                "n_decode": int(row.n_decode), "kv_used_tokens": int(row.kv_used_tokens)}
        for extra in ("preemptions", "swap_s"):
            if hasattr(row, extra) and getattr(row, extra):
                args[extra] = float(getattr(row, extra))
        events.append({"name": kind, "ph": "X", "pid": pid, "tid": tid, "ts": ts, "dur": row.duration_s * 1e6,
                       "args": args})
        if kv_counters and hasattr(row, "kv_capacity_tokens"):
            events.append({"name": f"kv_cache{tid}", "ph": "C", "pid": pid, "tid": tid, "ts": ts,
                           "args": {"use": row.kv_used_tokens / row.kv_capacity_tokens}})
    return {"traceEvents": events, "displayTimeUnit": "ms"}
