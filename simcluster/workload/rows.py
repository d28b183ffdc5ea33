"""Rows of a CSV or JSONL trace file as columns, with the file line of every row kept for errors.

The fast path hands the whole file to pandas (CSV) or pyarrow (JSONL); only when that fails does
a slow line-by-line pass run, so that a malformed row is reported by its line number.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.json as pa_json

from simcluster.workload.trace import TraceError

# Seconds per unit of a numeric time column.
TIME_UNITS_S: dict[str, float] = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class Rows:
    """The columns of one trace file; `lines[i]` is the 1-based file line of row i."""

    path: str
    frame: pd.DataFrame
    lines: np.ndarray
    lists: dict[str, pa.ChunkedArray | list]

    def fail(self, row: int, column: str, problem: str) -> TraceError:
        """A one-line error naming the file, the line of `row` and the column."""
        return TraceError(f"{self.path}: line {int(self.lines[row])} column {column!r}: {problem}")

    def require(self, *columns: str) -> None:
        """Raise naming the first column the file lacks."""
        for column in columns:
            if column not in self.frame.columns and column not in self.lists:
                found = ", ".join(repr(c) for c in self.frame.columns)
                raise TraceError(f"{self.path}: line 1: missing column {column!r}; found {found}")


def first_line(path: str | Path) -> str:
    """The first non-blank line of a text file ('' if it has none), for format sniffing."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    return line.strip()
    except OSError as err:
        raise TraceError(f"{path}: cannot read the file ({err.strerror}); expected a trace file") from None
    return ""


def read_csv_rows(path: str | Path) -> Rows:
    """All rows of a CSV file with a header line; raises TraceError for an empty or ragged file."""
    path = str(path)
    if not first_line(path):
        raise TraceError(f"{path}: the file is empty; expected a header line and at least one row")
    try:
        # Blank lines are kept as all-NaN rows so row i stays on file line i + 2.
        frame = pd.read_csv(path, skip_blank_lines=False, skipinitialspace=True)
    except pd.errors.ParserError as err:
        raise TraceError(f"{path}: {_one_line(err)}; expected the same number of fields on every line") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    # A file that ends in blank lines is fine; blank lines inside it are reported by the checks.
    empty = frame.isna().all(axis=1).to_numpy()
    keep = len(frame) - int(np.argmin(empty[::-1])) if not empty.all() else 0
    frame = frame.iloc[:keep]
    if len(frame) == 0:
        raise TraceError(f"{path}: line 2: no rows after the header; expected at least one request")
    if empty[:keep].any():
        line = int(np.argmax(empty[:keep])) + 2
        raise TraceError(f"{path}: line {line}: blank line; expected a row of {len(frame.columns)} fields")
    return Rows(path, frame.reset_index(drop=True), np.arange(len(frame)) + 2, {})


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def _jsonl_slow(path: str) -> Rows:
    """Parse line by line; raises at the first line that is not one JSON object."""
    records, lines = [], []
    with open(path, encoding="utf-8") as f:
        for number, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise TraceError(f"{path}: line {number} column {err.colno}: not valid JSON ({err.msg}); "
                                 "expected one JSON object per line") from None
            if not isinstance(record, dict):
                raise TraceError(f"{path}: line {number}: a JSON {type(record).__name__}; "
                                 "expected one JSON object per line")
            records.append(record)
            lines.append(number)
    if not records:
        raise TraceError(f"{path}: the file is empty; expected one JSON object per line")
    frame = pd.DataFrame.from_records(records)
    lists = {c: frame.pop(c).tolist() for c in list(frame.columns) if frame[c].map(_is_list).any()}
    return Rows(path, frame, np.asarray(lines), lists)


def _is_list(value) -> bool:
    return isinstance(value, list)


def _line_numbers(path: str, count: int) -> np.ndarray:
    """File lines of the first `count` non-blank lines (pyarrow skips blank ones)."""
    lines = []
    with open(path, "rb") as f:
        for number, text in enumerate(f, start=1):
            if text.strip():
                lines.append(number)
                if len(lines) == count:
                    break
    return np.asarray(lines)


def read_jsonl_rows(path: str | Path) -> Rows:
    """All objects of a JSON-lines file; list-valued keys (hash_ids) are kept as Arrow lists."""
    path = str(path)
    if not first_line(path):
        raise TraceError(f"{path}: the file is empty; expected one JSON object per line")
    try:
        table = pa_json.read_json(path, read_options=pa_json.ReadOptions(block_size=16 << 20))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # Arrow names no line; the slow pass finds and names it (or reads the file if it can).
        return _jsonl_slow(path)
    lists, plain = {}, {}
    for column, values in zip(table.column_names, table.columns):
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            lists[column] = values
        elif pa.types.is_struct(values.type):
            return _jsonl_slow(path)
        else:
            plain[column] = values.to_numpy(zero_copy_only=False)
    frame = pd.DataFrame(plain)
    n = table.num_rows
    # Row i is on line i + 1 unless the file holds blank lines, which pyarrow skips.
    lines = np.arange(1, n + 1)
    if _count_lines(path) != n:
        lines = _line_numbers(path, n)
    return Rows(path, frame, lines, lists)


def _count_lines(path: str) -> int:
    """Lines in a file (a last line without a newline counts), read in chunks to bound memory."""
    count, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(16 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def read_rows(path: str | Path) -> Rows:
    """CSV or JSONL rows, told apart by the first non-blank character ('{' means JSONL)."""
    if first_line(path).startswith("{"):
        return read_jsonl_rows(path)
    return read_csv_rows(path)


def number_column(rows: Rows, column: str) -> np.ndarray:
    """A column as float64; raises naming the line of the first missing or non-numeric value."""
    rows.require(column)
    raw = rows.frame[column]
    if raw.dtype.kind in "iuf":
        values = raw.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.argmax(bad))
        value = raw.iloc[i]
        shown = "missing" if pd.isna(value) or str(value).strip() == "" else f"{value!r} is not a finite number"
        raise rows.fail(i, column, f"{shown}; expected a number")
    return values


def token_column(rows: Rows, column: str, allow_zero: bool = False) -> np.ndarray:
    """A column of token counts as int64; raises naming the line of the first bad count."""
    values = number_column(rows, column)
    bad = (values != np.round(values)) | (values < 0 if allow_zero else values <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        need = "a whole number >= 0" if allow_zero else "a positive whole number"
        raise rows.fail(i, column, f"{rows.frame[column].iloc[i]!r}; expected {need} of tokens")
    return values.astype(np.int64)


def time_column(rows: Rows, column: str, time_unit: str) -> np.ndarray:
    """Times in s: numbers in `time_unit` ('s', 'ms', 'us', 'ns') or, for 'datetime',
    wall-clock strings turned into seconds after the first row."""
    if time_unit == "datetime":
        rows.require(column)
        raw = rows.frame[column]
        stamps = pd.to_datetime(raw.astype("string").str.strip(), format="ISO8601", utc=True, errors="coerce")
        bad = stamps.isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            shown = "missing" if pd.isna(raw.iloc[i]) else repr(raw.iloc[i])
            raise rows.fail(i, column, f"{shown}; expected a date-time like '2023-11-16 18:15:46.6805900'")
        return ((stamps - stamps.iloc[0]) / pd.Timedelta(seconds=1)).to_numpy(dtype=np.float64)
    if time_unit not in TIME_UNITS_S:
        raise TraceError(f"{rows.path}: time_unit {time_unit!r}; expected one of "
                         f"{sorted(TIME_UNITS_S) + ['datetime']}")
    return number_column(rows, column) * TIME_UNITS_S[time_unit]


def list_column(rows: Rows, column: str) -> tuple[np.ndarray, ...]:
    """A column of integer lists (block-hash ids) as one int64 array per row."""
    rows.require(column)
    values = rows.lists.get(column)
    if values is None:
        raise rows.fail(0, column, f"{rows.frame[column].iloc[0]!r}; expected a list of integer ids")
    if isinstance(values, list):
        out = []
        for i, v in enumerate(values):
            if not isinstance(v, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                raise rows.fail(i, column, f"{v!r}; expected a list of integer ids")
            out.append(np.asarray(v, dtype=np.int64))
        return tuple(out)
    array = values.combine_chunks()
    if array.null_count:
        i = int(np.argmax(array.is_null().to_numpy(zero_copy_only=False)))
        raise rows.fail(i, column, "missing; expected a list of integer ids")
    if not pa.types.is_integer(array.type.value_type):
        raise rows.fail(0, column, f"holds {array.type.value_type} values; expected integer ids")
    flat = array.flatten()
    if flat.null_count:
        offsets = array.offsets.to_numpy()
        k = int(np.argmax(flat.is_null().to_numpy(zero_copy_only=False)))
        i = int(np.searchsorted(offsets, k, side="right") - 1)
        raise rows.fail(i, column, "holds a null id; expected a list of integer ids")
    ids = np.array(flat.to_numpy(), dtype=np.int64)
    ids.setflags(write=False)  # the per-row slices below are read-only views of it
    offsets = (array.offsets.to_numpy() - array.offsets[0].as_py()).tolist()
    return tuple(ids[a:b] for a, b in zip(offsets[:-1], offsets[1:]))
