"""argparse value types shared by the subcommands' parsers."""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """A positive integer, or an argparse error naming what was given."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def batch_shape(text: str) -> tuple[int, int]:
    """'BxS' -> (B, S), both positive: B sequences of S tokens."""
    try:
        b, s = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected BxS with two positive integers, e.g. 8x1024; got {text!r}") from None
    if b <= 0 or s <= 0:
        raise argparse.ArgumentTypeError(f"expected positive integers in BxS; got {text!r}")
    return b, s


def positive_float(text: str) -> float:
    """A positive finite number, or an argparse error naming what was given."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v
