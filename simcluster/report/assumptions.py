"""Which cost model priced what: per GPU and op family, the `method` of every op estimate.

Every OpEstimate says where its time came from ('measured', 'fitted', 'transferred', 'roofline',
'alpha-beta', ...). A report lists these so a reader knows which numbers rest on measurements of
that very GPU and which on datasheet peaks.
"""

from __future__ import annotations

import pandas as pd

from simcluster.cost import cost_model_for
from simcluster.cost.tables import measured_gpus
from simcluster.llm.ops import Batch, forward_ops
from simcluster.llm.spec import LlmSpec


def representative_batches(prompt_tokens: int, decode_batch: int, context_tokens: int) -> dict[str, Batch]:
    """One prefill iteration (one prompt) and one decode iteration (decode_batch sequences)."""
    return {"prefill": Batch(prefill=((max(1, prompt_tokens), 0),)),
            "decode": Batch(decode=(max(1, context_tokens),) * max(1, decode_batch))}


def op_methods(llm: LlmSpec, shapes: list[tuple[str, int, int, int]], cost_method: str = "calibrated",
               prompt_tokens: int = 1024, decode_batch: int = 32, context_tokens: int = 1024,
               dtype: str = "bf16") -> pd.DataFrame:
    """Flat records: gpu, tp, pp, ep, phase, kind (op family), method, ops, time_s, share
    (of the phase's iteration time), for representative prefill and decode iterations of each
    (gpu, tp, pp, ep) shape on pipeline stage 0."""
    rows = []
    models = {}
    for gpu, tp, pp, ep in dict.fromkeys(shapes):
        if gpu not in models:
            models[gpu] = cost_model_for(gpu, cost_method)
        cm = models[gpu]
        for phase, batch in representative_batches(prompt_tokens, decode_batch, context_tokens).items():
            it = cm.iteration(forward_ops(llm, batch, tp, pp, ep, dtype, dtype, 0))
            acc: dict[tuple[str, str], list] = {}
            for op in it.ops:
                a = acc.setdefault((op.kind, op.method), [0, 0.0])
                a[0] += op.repeat
                a[1] += op.time_s
            for (kind, method), (n, t) in sorted(acc.items()):
                rows.append({"gpu": gpu, "tp": tp, "pp": pp, "ep": ep, "phase": phase, "kind": kind,
                             "method": method, "ops": n, "time_s": t, "share": t / it.time_s if it.time_s else 0.0})
    return pd.DataFrame(rows, columns=["gpu", "tp", "pp", "ep", "phase", "kind", "method", "ops", "time_s", "share"])


def method_summary(methods: pd.DataFrame) -> pd.DataFrame:
    """One row per GPU, one column per op family: the method(s) that priced it, with their share
    of that family's predicted time when more than one did; plus whether measured tables exist."""
    measured = set(measured_gpus())
    kinds = sorted(methods["kind"].unique()) if len(methods) else []
    rows = []
    for gpu, g in methods.groupby("gpu", sort=True):
        row = {"gpu": gpu, "measured tables": "yes" if gpu in measured else "no"}
        for kind in kinds:
            by = g[g["kind"] == kind].groupby("method")["time_s"].sum().sort_values(ascending=False)
            total = float(by.sum())
            if by.empty:
                row[kind] = "–"
            elif len(by) == 1:
                row[kind] = str(by.index[0])
            else:
                row[kind] = " / ".join(f"{m} {t / total:.0%}" for m, t in by.items())
        rows.append(row)
    return pd.DataFrame(rows, columns=["gpu", "measured tables", *kinds])


def fallback_share(methods: pd.DataFrame) -> dict[str, float]:
    """Per GPU: the fraction of predicted iteration time priced by the datasheet roofline fallback."""
    out = {}
    for gpu, g in methods.groupby("gpu"):
        total = float(g["time_s"].sum())
        out[gpu] = float(g.loc[g["method"] == "roofline", "time_s"].sum()) / total if total else 0.0
    return out
