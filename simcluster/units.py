"""Unit constants and parsers. Everything inside simcluster is SI: s, bytes, FLOP, FLOP/s, bytes/s."""

from __future__ import annotations

import re

KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4
KB = 1e3
MB = 1e6
GB = 1e9
TB = 1e12

TFLOPS = 1e12
PFLOPS = 1e15

MS = 1e-3
US = 1e-6

HOUR_S = 3600.0

# Bytes per element of each numeric format simcluster knows.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "tf32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "fp4": 0.5,
    "int4": 0.5,
}

_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([KMGTP]i?B?|B)?\s*$")
_SIZE_FACTORS = {
    None: 1, "B": 1,
    "K": KB, "KB": KB, "Ki": KiB, "KiB": KiB,
    "M": MB, "MB": MB, "Mi": MiB, "MiB": MiB,
    "G": GB, "GB": GB, "Gi": GiB, "GiB": GiB,
    "T": TB, "TB": TB, "Ti": TiB, "TiB": TiB,
}


def dtype_bytes(dtype: str) -> float:
    """Bytes per element of `dtype` ('bf16', 'fp8', ...); raises KeyError naming the known ones."""
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise KeyError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPE_BYTES)}") from None


def parse_bytes(text: str | int | float) -> float:
    """Parse '80GiB', '4 KiB', '1e9' or a number into bytes.

    >>> parse_bytes("4KiB")
    4096.0
    """
    if isinstance(text, (int, float)):
        return float(text)
    m = _SIZE_RE.match(str(text))
    if not m or m.group(2) not in _SIZE_FACTORS:
        raise ValueError(f"cannot read {text!r} as a size in bytes (e.g. '4KiB', '80GB')")
    return float(m.group(1)) * _SIZE_FACTORS[m.group(2)]


def format_bytes(n: float) -> str:
    """Human-readable binary size: 1536 -> '1.5 KiB'."""
    for unit, factor in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= factor:
            return f"{n / factor:.1f} {unit}"
    return f"{n:.0f} B"
