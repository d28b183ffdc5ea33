"""Write burstgpt_format_synthetic.csv: SYNTHETIC requests in the BurstGPT column format.

No BurstGPT data is used; the rows come from simcluster's own seeded generators, so that the
BurstGPT reader has a sample to run on. Run from the repository root:

    PYTHONPATH=. python scenarios/traces/make_burstgpt_format_sample.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from simcluster.workload import Lengths, Lognormal, Zipf, gamma

HEADER = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
ROWS = 1000
SEED = 20240601
FAILURE_FRACTION = 0.03  # failed requests are logged with 0 response tokens in this format


def rows(seed: int = SEED, n: int = ROWS) -> list[str]:
    """The CSV lines (header first) of the sample; the same seed gives the same lines."""
    lengths = Lengths(prompt=Zipf(a=0.9, min=4, max=4096), output=Lognormal.from_mean_p50(300, 200, 1, 2048))
    trace = gamma(rate_per_s=0.5, cv=2.0, n=n, lengths=lengths, seed=seed)
    rng = np.random.default_rng(seed + 1)
    models = np.where(rng.random(n) < 0.8, "ChatGPT", "GPT-4")
    logs = np.where(rng.random(n) < 0.7, "Conversation log", "API log")
    output = np.where(rng.random(n) < FAILURE_FRACTION, 0, trace.output_tokens)
    # The format logs whole seconds.
    seconds = np.floor(trace.arrival_s).astype(np.int64)
    lines = [HEADER]
    for t, m, p, o, log in zip(seconds, models, trace.prompt_tokens, output, logs):
        lines.append(f"{t},{m},{p},{o},{p + o},{log}")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path(__file__).with_name("burstgpt_format_synthetic.csv")
    out.write_text("\n".join(rows()) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
