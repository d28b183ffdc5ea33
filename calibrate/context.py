"""What every benchmark section is handed: device, timer, random pool, output folder, deadline."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import torch

from calibrate.table import Table
from calibrate.timing import RandomPool, Timer


@dataclass
class BenchContext:
    """One section's view of the run; `expired()` tells a sweep to stop adding points."""

    device: torch.device
    out_dir: Path
    smoke: bool
    timer: Timer
    pool: RandomPool
    deadline_s: float = float("inf")       # time.monotonic() value after which a sweep stops
    notes: list = field(default_factory=list)
    appended: set = field(default_factory=set)
    skipped: int = 0
    rank: int = 0
    # Across ranks: maps this rank's verdict to one all ranks share, so none waits alone.
    agree: Callable[[bool], bool] | None = None
    # Rows of an existing file that a fresh open keeps (e.g. other world sizes' rows).
    keep_rows: Callable[[dict], bool] | None = None

    def expired(self) -> bool:
        local = time.monotonic() > self.deadline_s
        return self.agree(local) if self.agree is not None else local

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"  note: {text}", flush=True)

    def table(self, name: str):
        """A CSV in the output folder (rank 0 only); the first open in a run starts it afresh
        (keeping rows `keep_rows` accepts), later ones append."""
        if self.rank != 0:
            return NullTable()
        append = name in self.appended
        self.appended.add(name)
        return Table(self.out_dir / name, append=append,
                     keep=None if append else self.keep_rows)

    def with_deadline(self, budget_s: float) -> "BenchContext":
        self.deadline_s = time.monotonic() + budget_s
        self.skipped = 0
        return self


class NullTable:
    """What ranks other than 0 write to: nothing."""

    rows = 0

    def add(self, **row) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def make_context(device: torch.device, out_dir: Path, smoke: bool,
                 pool_elements: int | None = None) -> BenchContext:
    """Context for a run on `device`; the random pool is sized to the largest single operand."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        l2 = torch.cuda.get_device_properties(device).L2_cache_size
        timer = Timer(device, smoke=smoke, l2_bytes=l2)
        default = 2**30        # 2 GiB of bf16: the largest GEMM operand is 0.94 G elements
    else:
        timer = Timer(device, smoke=True, l2_bytes=2**20)
        default = 2**20 if smoke else 2**24
    pool_elements = pool_elements or default
    torch.manual_seed(0)
    return BenchContext(device=device, out_dir=Path(out_dir), smoke=smoke, timer=timer,
                        pool=RandomPool(device, pool_elements, seed=0))
