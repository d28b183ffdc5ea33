"""Flat result records of a serving run: one row per request, one per iteration, run statistics."""

from __future__ import annotations

from array import array

import numpy as np
import pandas as pd

from simcluster.serving.iteration_log import COLUMNS


class RequestRecords:
    """Per-request outcomes written as requests finish (column arrays, so finished Sequence objects
    can be dropped: memory stays proportional to the requests in flight plus 80 bytes a request)."""

    def __init__(self, n: int):
        # array.array item stores are several times cheaper than numpy scalar stores.
        nan = array("d", [float("nan")])
        self.finished = array("b", bytes(n))
        self.replica = array("i", [-1]) * n
        self.prefill_replica = array("i", [-1]) * n
        self.cached = array("q", bytes(8 * n))
        self.scheduled_s = nan * n
        self.first_token_s = nan * n
        self.finish_s = nan * n
        self.preemptions = array("q", bytes(8 * n))
        self.max_itl_s = nan * n
        self.kv_transfer_s = array("d", bytes(8 * n))
        self.handed = array("b", bytes(n))      # decoded on a decode-pool replica
        self.count = 0

    def __call__(self, seq, now: float) -> None:
        i = seq.rid
        self.finished[i] = 1
        self.replica[i] = seq.replica
        if seq.prefill_replica >= 0:
            self.handed[i] = 1
            self.prefill_replica[i] = seq.prefill_replica
        else:
            self.prefill_replica[i] = seq.replica
        self.cached[i] = seq.cached
        self.scheduled_s[i] = seq.scheduled_s
        self.first_token_s[i] = seq.first_token_s
        self.finish_s[i] = now
        self.preemptions[i] = seq.preemptions
        if seq.output > 1:
            self.max_itl_s[i] = seq.stall_s
        self.kv_transfer_s[i] = seq.transfer_s
        self.count += 1

    def column(self, name: str) -> np.ndarray:
        return np.frombuffer(getattr(self, name), dtype=np.dtype(getattr(self, name).typecode))

    def frame(self, trace, names: list[str]) -> pd.DataFrame:
        """Finished requests in id order with the columns metrics.summarize expects."""
        col = self.column
        idx = np.flatnonzero(col("finished"))
        labels = list(names)       # replica names are unique (group and index are in them)
        return pd.DataFrame({
            "request_id": idx.astype(np.int64),
            "replica": pd.Categorical.from_codes(col("replica")[idx], categories=labels),
            "arrival_s": np.asarray(trace.arrival_s)[idx],
            "prompt_tokens": np.asarray(trace.prompt_tokens)[idx].astype(np.int64),
            "output_tokens": np.asarray(trace.output_tokens)[idx].astype(np.int64),
            "cached_tokens": col("cached")[idx].astype(np.int64),
            "scheduled_s": col("scheduled_s")[idx],
            "first_token_s": col("first_token_s")[idx],
            "finish_s": col("finish_s")[idx],
            "preemptions": col("preemptions")[idx].astype(np.int64),
            "max_itl_s": col("max_itl_s")[idx],
            "prefill_replica": pd.Categorical.from_codes(col("prefill_replica")[idx], categories=labels),
            "kv_transfer_s": col("kv_transfer_s")[idx],
        })


INTEGER_COLUMNS = ("n_prefill", "prefill_tokens", "n_decode", "kv_used_blocks", "preemptions", "n_running", "n_waiting")


def iteration_frame(replicas) -> pd.DataFrame:
    """One row per iteration of every scheduler of every replica, in replica order.

    Built column by column from the logs (one copy of the data); replica names are categorical so a
    million-row frame does not hold a million string references.
    """
    logs, owner, engine, block, capacity = [], [], [], [], []
    for ri, r in enumerate(replicas):
        for e, (sched, log) in enumerate(zip(r.schedulers, r.logs)):
            logs.append(np.frombuffer(log.rows, dtype=np.float64).reshape(-1, len(COLUMNS)))
            n = len(logs[-1])
            owner.append(np.full(n, ri, dtype=np.int32))
            engine.append(np.full(n, e, dtype=np.int16))
            block.append(np.full(n, sched.block_size, dtype=np.int64))
            capacity.append(np.full(n, sched.kv.total * sched.block_size, dtype=np.int64))
    names = [r.name for r in replicas]
    if not logs:
        return pd.DataFrame(columns=["replica", "engine", *COLUMNS, "kv_used_tokens", "kv_capacity_tokens"])
    data = np.concatenate(logs)
    columns = {"replica": pd.Categorical.from_codes(np.concatenate(owner), categories=names),
               "engine": np.concatenate(engine)}
    for i, c in enumerate(COLUMNS):
        columns[c] = data[:, i].astype(np.int64) if c in INTEGER_COLUMNS else data[:, i].copy()
    del data
    columns["kv_used_tokens"] = columns["kv_used_blocks"] * np.concatenate(block)
    columns["kv_capacity_tokens"] = np.concatenate(capacity)
    return pd.DataFrame(columns)


def replica_frame(replicas, groups) -> pd.DataFrame:
    """One row per replica: its GPUs and their peak rates (for MFU/MBU), role and KV capacity."""
    rows = []
    for r in replicas:
        g = groups[r.group]
        rows.append({"replica": r.name, "group": r.group, "role": r.role, "gpu": g.gpu.name,
                     "gpus": g.gpus_per_replica, "peak_flops_per_s": g.gpu.flops_per_s(g.dtype),
                     "hbm_bandwidth_bytes_per_s": g.gpu.hbm_bandwidth_bytes_per_s,
                     "kv_capacity_blocks": r.kv_blocks, "block_size": r.batching.block_size,
                     "node": "" if r.node is None else f"{r.node[0]}#{r.node[1]}"})
    return pd.DataFrame(rows)


def iteration_stats(iterations: pd.DataFrame, replicas: pd.DataFrame, duration_s: float) -> dict:
    """GPU time utilisation, MFU, MBU and KV-cache use of a run.

    gpu_time_utilisation: GPU-weighted fraction of the run the replicas' GPUs were busy (a PP
    stage counts busy while it runs a micro-batch). mfu / mbu: model FLOPs (bytes) of all
    iterations over peak FLOP/s (HBM bytes/s) × GPUs × duration (PaLM, Chowdhery et al. 2022,
    App. B defines MFU this way). kv_cache_use_*: fraction of a scheduler's KV blocks pinned by
    sequences, weighted by iteration time (mean) and its maximum.
    """
    out = {"gpu_time_utilisation": 0.0, "mfu": 0.0, "mbu": 0.0, "kv_cache_use_mean": 0.0,
           "kv_cache_use_max": 0.0, "iterations": int(len(iterations))}
    if duration_s <= 0 or not len(replicas):
        return out
    gpus = replicas.set_index("replica")["gpus"]
    total_gpus = float(gpus.sum())
    if len(iterations):
        per = iterations.groupby("replica", sort=False)[["busy_s", "flops", "bytes"]].sum()
        meta = replicas.set_index("replica").loc[per.index]
        out["gpu_time_utilisation"] = float((per["busy_s"] * meta["gpus"]).sum() / (total_gpus * duration_s))
        out["mfu"] = float(per["flops"].sum() / ((replicas["gpus"] * replicas["peak_flops_per_s"]).sum() * duration_s))
        out["mbu"] = float(per["bytes"].sum()
                           / ((replicas["gpus"] * replicas["hbm_bandwidth_bytes_per_s"]).sum() * duration_s))
        use = iterations["kv_used_tokens"].to_numpy(float) / iterations["kv_capacity_tokens"].to_numpy(float)
        weight = iterations["duration_s"].to_numpy(float)
        engines = iterations.groupby(["replica", "engine"], sort=False).ngroups
        out["kv_cache_use_mean"] = float((use * weight).sum() / (engines * duration_s))
        out["kv_cache_use_max"] = float(use.max())
    return out


def kv_use_series(iterations: pd.DataFrame, step_s: float) -> pd.DataFrame:
    """KV-cache use over time: per replica, the mean fraction of KV in use in bins of step_s."""
    if not len(iterations):
        return pd.DataFrame(columns=["replica", "time_s", "kv_cache_use"])
    f = iterations[["replica", "start_s", "kv_used_tokens", "kv_capacity_tokens"]].copy()
    f["time_s"] = np.floor(f["start_s"] / step_s) * step_s
    f["kv_cache_use"] = f["kv_used_tokens"] / f["kv_capacity_tokens"]
    return f.groupby(["replica", "time_s"], sort=False, as_index=False)["kv_cache_use"].mean()


def request_table(requests: pd.DataFrame) -> tuple[str, object]:
    """(file name, content) for per-request records: Parquet bytes when pyarrow is installed, else
    the frame itself (written as CSV)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return "requests.csv", requests
    import io
    buf = io.BytesIO()
    requests.to_parquet(buf, index=False)
    return "requests.parquet", buf.getvalue()
