"""Readers of public LLM serving traces (Azure 2023/2024, BurstGPT, Mooncake) and of any CSV/JSONL.

Every reader returns a Trace in seconds and tokens and raises TraceError naming the file, line
and column of the first malformed row. Files are read whole by pandas or pyarrow, so a
million-row trace loads in about a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from simcluster.workload.rows import Rows, first_line, list_column, read_csv_rows, read_jsonl_rows, \
    read_rows, time_column, token_column
from simcluster.workload.trace import Trace, TraceError

# Column names as published with each trace.
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Total tokens", "Log Type")
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length", "hash_ids")
TABLE_KEYS = ("arrival_s", "prompt_tokens", "output_tokens")
MOONCAKE_BLOCK_TOKENS = 512  # Mooncake hashes prompts in 512-token blocks (FAST'25 trace README).


def _build(rows: Rows, name: str | None, source: str, arrival_s: np.ndarray, prompt: np.ndarray,
           output: np.ndarray, hash_ids=None, block_tokens: int = 512, sort: bool = False) -> Trace:
    """A Trace from checked columns; unsorted arrivals are sorted (stably) or reported by line."""
    if sort:
        order = np.argsort(arrival_s, kind="stable")
        arrival_s, prompt, output = arrival_s[order], prompt[order], output[order]
        if hash_ids is not None:
            hash_ids = tuple(hash_ids[i] for i in order)
    else:
        down = np.diff(arrival_s) < 0
        if down.any():
            i = int(np.argmax(down)) + 1
            raise TraceError(f"{rows.path}: line {int(rows.lines[i])}: arrival time goes back "
                             f"{arrival_s[i - 1] - arrival_s[i]:.6g} s from the line before; expected rows "
                             "sorted by time (pass sort=True to sort them)")
    if arrival_s[0] < 0:
        raise TraceError(f"{rows.path}: line {int(rows.lines[0])}: arrival time {arrival_s[0]} s; "
                         "expected times >= 0 (pass start_at_zero=True to shift them)")
    return Trace(name=name or Path(rows.path).stem, arrival_s=arrival_s, prompt_tokens=prompt,
                 output_tokens=output, hash_ids=hash_ids, block_tokens=block_tokens, source=source)


def read_azure(path: str | Path, *, name: str | None = None, sort: bool = False) -> Trace:
    """Azure LLM inference trace 2023 or 2024: TIMESTAMP, ContextTokens, GeneratedTokens.

    TIMESTAMP is wall-clock time ('2023-11-16 18:17:03.9799600'); arrival_s counts from the
    first row. Source: Azure Public Dataset, CC BY 4.0 (Patel et al., Splitwise, ISCA'24).
    """
    rows = read_csv_rows(path)
    rows.require(*AZURE_COLUMNS)
    arrival = time_column(rows, "TIMESTAMP", "datetime")
    prompt = token_column(rows, "ContextTokens")
    output = token_column(rows, "GeneratedTokens")
    return _build(rows, name, str(path), arrival, prompt, output, sort=sort)


def read_burstgpt(path: str | Path, *, model: str | list[str] | None = None, log_type: str | None = None,
                  name: str | None = None, sort: bool = False) -> Trace:
    """BurstGPT trace: Timestamp (s), Model, Request tokens, Response tokens, Total tokens, Log Type.

    BurstGPT logs a failed request with 0 response tokens; those rows are dropped and their
    count is written in Trace.source ('...; dropped 12 failed requests (Response tokens = 0)').
    `model` keeps only rows of that model (or models); `log_type` only rows of that Log Type
    ('Conversation log' or 'API log').
    """
    rows = read_csv_rows(path)
    rows.require(*BURSTGPT_COLUMNS)
    keep = np.ones(len(rows.frame), dtype=bool)
    filters = []
    if model is not None:
        models = [model] if isinstance(model, str) else list(model)
        keep &= rows.frame["Model"].astype("string").str.strip().isin(models).to_numpy(dtype=bool)
        filters.append(f"model in {models}")
    if log_type is not None:
        keep &= (rows.frame["Log Type"].astype("string").str.strip() == log_type).to_numpy(dtype=bool)
        filters.append(f"Log Type = {log_type!r}")
    if not keep.any():
        raise TraceError(f"{path}: no row has {' and '.join(filters)}; expected at least one request")
    rows = Rows(rows.path, rows.frame[keep].reset_index(drop=True), rows.lines[keep], {})
    arrival = time_column(rows, "Timestamp", "s")
    prompt = token_column(rows, "Request tokens")
    output = token_column(rows, "Response tokens", allow_zero=True)
    ok = output > 0
    dropped = int((~ok).sum())
    if not ok.any():
        raise TraceError(f"{path}: every selected row has 0 response tokens (failed requests); "
                         "expected at least one completed request")
    rows = Rows(rows.path, rows.frame[ok].reset_index(drop=True), rows.lines[ok], {})
    source = f"{path}; {', '.join(filters + [f'dropped {dropped} failed requests (Response tokens = 0)'])}"
    return _build(rows, name, source, arrival[ok], prompt[ok], output[ok], sort=sort)


def read_mooncake(path: str | Path, *, name: str | None = None, sort: bool = False) -> Trace:
    """Mooncake trace (JSONL): timestamp (ms), input_length, output_length, hash_ids.

    hash_ids holds one id per 512-token prompt block; equal leading ids mean a shared prefix.
    Source: kvcache-ai/Mooncake, FAST'25 traces, Apache-2.0.
    """
    rows = read_jsonl_rows(path)
    rows.require("timestamp", "input_length", "output_length")
    arrival = time_column(rows, "timestamp", "ms")
    prompt = token_column(rows, "input_length")
    output = token_column(rows, "output_length")
    hashes = list_column(rows, "hash_ids") if "hash_ids" in rows.lists or "hash_ids" in rows.frame else None
    return _build(rows, name, str(path), arrival, prompt, output, hashes, MOONCAKE_BLOCK_TOKENS, sort)


def read_table(path: str | Path, columns: dict[str, str] | None = None, time_unit: str = "s", *,
               hash_ids: str | None = None, block_tokens: int = 512, start_at_zero: bool = False,
               name: str | None = None, sort: bool = False) -> Trace:
    """Any CSV or JSONL file, its columns named by `columns` = {"arrival_s": ..., "prompt_tokens":
    ..., "output_tokens": ...} (default: those names themselves).

    `time_unit` is the unit of the arrival column: 's', 'ms', 'us', 'ns', or 'datetime' for
    wall-clock strings (then arrival_s counts from the first row). `start_at_zero` shifts numeric
    times so the first request arrives at 0 s. `hash_ids` names an optional column of prefix-block
    id lists of `block_tokens` tokens each.

    >>> read_table("requests.csv", {"arrival_s": "t_ms", "prompt_tokens": "in", "output_tokens": "out"},
    ...            time_unit="ms")  # doctest: +SKIP
    """
    mapping = dict(columns or {k: k for k in TABLE_KEYS})
    for key in mapping:
        if key not in TABLE_KEYS:
            raise TraceError(f"{path}: columns key {key!r}; expected keys {list(TABLE_KEYS)}")
    for key in TABLE_KEYS:
        if key not in mapping:
            raise TraceError(f"{path}: columns lacks key {key!r}; expected keys {list(TABLE_KEYS)}")
    rows = read_rows(path)
    rows.require(*mapping.values())
    arrival = time_column(rows, mapping["arrival_s"], time_unit)
    if start_at_zero and time_unit != "datetime":
        arrival = arrival - arrival.min()
    prompt = token_column(rows, mapping["prompt_tokens"])
    output = token_column(rows, mapping["output_tokens"])
    hashes = list_column(rows, hash_ids) if hash_ids else None
    return _build(rows, name, str(path), arrival, prompt, output, hashes, block_tokens, sort)


# Trace formats read_trace knows: name -> reader. A new format is one reader plus one entry here
# and one header test in sniff_format. 'csv' and 'jsonl' name the generic reader, which tells
# the two apart by the first character of the file.
READERS = {"azure": read_azure, "burstgpt": read_burstgpt, "mooncake": read_mooncake, "table": read_table,
           "csv": read_table, "jsonl": read_table}


def sniff_format(path: str | Path) -> str:
    """The format of a trace file from its first line: 'azure', 'burstgpt', 'mooncake' or 'table'."""
    head = first_line(path)
    if not head:
        raise TraceError(f"{path}: the file is empty; expected a trace file")
    if head.startswith("{"):
        if '"input_length"' in head and '"output_length"' in head and '"timestamp"' in head:
            return "mooncake"
        fields = set()
    else:
        fields = {f.strip().strip('"') for f in head.split(",")}
    if set(AZURE_COLUMNS) <= fields:
        return "azure"
    if {"Timestamp", "Request tokens", "Response tokens"} <= fields:
        return "burstgpt"
    if set(TABLE_KEYS) <= fields or (head.startswith("{") and all(f'"{k}"' in head for k in TABLE_KEYS)):
        return "table"
    raise TraceError(f"{path}: line 1: unknown trace format {head[:80]!r}; expected Azure "
                     f"({', '.join(AZURE_COLUMNS)}), BurstGPT, Mooncake JSONL or columns "
                     f"{', '.join(TABLE_KEYS)} (else call read_table with a column mapping)")


def read_trace(path: str | Path, format: str = "auto", **options) -> Trace:
    """Read a trace file of a known format; format='auto' tells it by the header line.

    `options` go to the format's reader (e.g. model=... for BurstGPT, sort=True); a `columns`
    mapping means the generic reader (read_table) whatever the header.

    >>> read_trace("scenarios/traces/azure_llm_2023_code.csv").name  # doctest: +SKIP
    'azure_llm_2023_code'
    """
    if format == "auto":
        fmt = "table" if options.get("columns") else sniff_format(path)
    else:
        fmt = format
    if fmt not in READERS:
        raise TraceError(f"{path}: format {format!r}; expected 'auto' or one of {sorted(READERS)}")
    return READERS[fmt](path, **options)
