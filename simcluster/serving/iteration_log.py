"""IterationLog: what one scheduler did each iteration, stored column-wise in compact arrays.

Appending one row costs one `array.extend`, so the log stays cheap for millions of iterations
(8 bytes per field). The end time of every decode iteration is kept too: per-request worst
inter-token gaps are read off it (see Scheduler._settle).
"""

from __future__ import annotations

from array import array

import numpy as np

COLUMNS = ("start_s", "duration_s", "busy_s", "n_prefill", "prefill_tokens", "n_decode",
           "kv_used_blocks", "flops", "bytes", "swap_s", "preemptions", "n_running", "n_waiting")


class IterationLog:
    """Rows of COLUMNS and the end time of every decode iteration."""

    def __init__(self):
        self.rows = array("d")
        self.decode_end_s = array("d")   # index k: end of the scheduler's (k+1)-th decode iteration

    def table(self) -> dict[str, np.ndarray]:
        data = np.frombuffer(self.rows, dtype=np.float64).reshape(-1, len(COLUMNS)) if len(self.rows) else \
            np.zeros((0, len(COLUMNS)))
        return {c: data[:, i].copy() for i, c in enumerate(COLUMNS)}
