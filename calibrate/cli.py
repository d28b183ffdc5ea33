"""Command line: parsing only; `run` dispatches to the single-GPU suite or the multi-GPU part."""

from __future__ import annotations

import argparse
import os


class UsageError(ValueError):
    """A command-line value that cannot be used."""


def parse_ranks(text: str | None) -> list[int]:
    """'2' or '2,4' -> [2, 4]; every world size must be an integer of at least 2."""
    if not text:
        return []
    try:
        worlds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--ranks: expected comma-separated integers, got {text!r}") from None
    if not worlds or min(worlds) < 2:
        raise UsageError(f"--ranks: expected world sizes of at least 2, got {text!r}")
    return worlds


def parse_only(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m calibrate",
                                     description="simcluster GPU microbenchmarks")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure and write CSVs + provenance into --out")
    run.add_argument("--out", required=True, help="output folder, e.g. profiles/measured/h100-sxm")
    run.add_argument("--only", help="comma-separated sections (default: all)")
    run.add_argument("--smoke", action="store_true", help="tiny shapes: checks the code path")
    run.add_argument("--ranks", help="multi-GPU part at these world sizes, e.g. 2 or 2,4")
    run.add_argument("--device", help="force a device, e.g. cpu (default: cuda:0 if present)")
    run.add_argument("--budget-scale", type=float, default=1.0,
                     help="multiply every section's time budget")
    sub.add_parser("sections", help="list the section names")
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    args = build_parser().parse_args(argv)
    if args.command == "sections":
        from calibrate.multi import MULTI_SECTIONS
        from calibrate.runner import SINGLE_SECTIONS
        print("single-GPU:", ", ".join(SINGLE_SECTIONS))
        print("multi-GPU (--ranks):", ", ".join(["p2p", *MULTI_SECTIONS]))
        return 0
    try:
        worlds = parse_ranks(args.ranks)
        only = parse_only(args.only)
        if worlds:
            from calibrate.multi import run_multi
            return run_multi(args.out, worlds, only, args.smoke, args.device, args.budget_scale)
        from calibrate.runner import run_suite
        return run_suite(args.out, only, args.smoke, args.device, args.budget_scale)
    except (UsageError, ValueError) as exc:
        if type(exc).__name__ not in ("UsageError", "SectionError"):
            raise
        print(f"error: {exc}")
        return 2
