"""The sweep result cache: one JSON file per result, keyed by a stable hash, written atomically.

A key is the SHA-256 of the canonical JSON of (function name, candidate, input fingerprint), so
the same work asked again — by a resumed sweep, another process or another machine sharing the
folder — finds its answer instead of recomputing it. Files are written to a temporary name in the
same folder and renamed into place (os.replace is atomic on POSIX), so an interrupted sweep leaves
either a whole result or nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np


class CacheError(ValueError):
    """A cache folder that cannot be used, or a value that has no stable hash; one line."""


def canonical(obj):
    """A JSON-ready structure with one spelling per value: dict keys sorted, tuples as lists,
    numpy scalars and arrays as Python numbers and lists, dataclasses and pydantic models as dicts.
    Floats keep their repr (17 significant digits) so distinct values never share a key."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else repr(value)
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": str(obj.dtype), "shape": list(obj.shape),
                "sha256": hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()}
    if isinstance(obj, dict):
        return {str(k): canonical(obj[k]) for k in sorted(obj, key=str)}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__type__": type(obj).__name__,
                **{f.name: canonical(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if hasattr(obj, "model_dump"):
        return {"__type__": type(obj).__name__, **canonical(obj.model_dump())}
    raise CacheError(f"cache key: a {type(obj).__name__} has no stable hash; expected JSON-like values, "
                     f"numpy arrays, dataclasses or pydantic models")


def code_fingerprint(*modules) -> str:
    """SHA-256 of the source files of the given modules' packages: a cached result is only reused
    by the code that computed it (a fix in the simulator invalidates old results)."""
    digest = hashlib.sha256()
    for module in modules:
        folder = Path(module.__file__).parent
        for path in sorted(folder.rglob("*.py")):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def object_fingerprint(obj) -> str:
    """SHA-256 of an object's pickle (e.g. a fitted cost model): equal objects built the same way
    pickle the same; when they do not, the cache is merely missed."""
    import pickle
    return hashlib.sha256(pickle.dumps(obj, protocol=4)).hexdigest()


def stable_hash(*parts) -> str:
    """Hex SHA-256 of the canonical JSON of `parts`; equal for equal values in any process.

    >>> stable_hash({"b": 1, "a": (2, 3)}) == stable_hash({"a": [2, 3], "b": 1})
    True
    """
    text = json.dumps(canonical(list(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class ResultCache:
    """A folder of results: <dir>/<key[:2]>/<key>.json holding the key's inputs and the result."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CacheError(f"{directory}: cannot create the cache folder ({err.strerror})") from None

    def key(self, function: str, candidate: dict, fingerprint: str) -> str:
        return stable_hash(function, candidate, fingerprint)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str):
        """The stored result, or None when absent or unreadable (a torn file from another writer
        cannot exist, but a hand-edited one can: it is recomputed rather than trusted)."""
        try:
            record = json.loads(self.path(key).read_text())
        except (OSError, ValueError):
            return None
        return record.get("result") if isinstance(record, dict) and record.get("key") == key else None

    def put(self, key: str, result, function: str = "", candidate: dict | None = None) -> Path:
        """Write atomically: a temporary file in the same folder, flushed, then renamed over."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"key": key, "function": function, "candidate": canonical(candidate), "result": result}
        text = json.dumps(record, sort_keys=True, default=_json_default)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("??/*.json"))


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"a sweep result must be JSON-ready; got a {type(obj).__name__}")
