"""Report figures (matplotlib, Agg backend): each function takes computed numbers, returns PNG bytes.

This is the only module that imports matplotlib. Inputs are in SI units; axes show ms or GiB where
that reads better, and say so in their labels.
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

# One palette for every report (colour-blind safe, after Okabe & Ito 2008).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
KIND_COLOURS = {"prefill": "#D55E00", "decode": "#0072B2", "mixed": "#CC79A7",
                "F": "#0072B2", "B": "#E69F00", "W": "#009E73", "optimizer": "#999999"}
DPI = 110


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color="#e6e6e6", linewidth=0.7)
    ax.set_axisbelow(True)


def png(fig) -> bytes:
    """The figure as PNG bytes; the figure is closed (no pyplot state survives the call)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def pareto_plot(rows: list[dict], latency_key: str, front_labels: set[str], best_label: str | None) -> bytes:
    """Cost (USD/h) against the latency percentile `latency_key` (s) of every verified plan;
    the Pareto front joined, the best plan starred, plans missing the SLO hollow."""
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    _style(ax)
    ok = [r for r in rows if r.get("meets_slo")]
    bad = [r for r in rows if not r.get("meets_slo")]
    if bad:
        ax.scatter([r["usd_per_hour"] for r in bad], [r[latency_key] * 1e3 for r in bad], s=36,
                   facecolors="none", edgecolors="#999999", label="misses the SLO")
    ax.scatter([r["usd_per_hour"] for r in ok], [r[latency_key] * 1e3 for r in ok], s=36, color=PALETTE[0],
               alpha=0.75, label="meets the SLO")
    # Rings, not a line: the front is over cost, TTFT and TPOT together, so in this 2-D view its
    # points need not form a staircase.
    front = [r for r in ok if r["plan"] in front_labels]
    if front:
        ax.scatter([r["usd_per_hour"] for r in front], [r[latency_key] * 1e3 for r in front], s=110,
                   facecolors="none", edgecolors=PALETTE[5], linewidths=1.6, label="on the Pareto front")
    for r in ok:
        if r["plan"] == best_label:
            ax.scatter([r["usd_per_hour"]], [r[latency_key] * 1e3], marker="*", s=260, color=PALETTE[1],
                       edgecolors="black", linewidths=0.6, zorder=5, label="best plan")
            ax.annotate(r["plan"], (r["usd_per_hour"], r[latency_key] * 1e3), textcoords="offset points",
                        xytext=(8, 6), fontsize=8)
    ax.set_xlabel("cost (USD/hour)")
    ax.set_ylabel(f"TTFT {latency_key.rsplit('_', 1)[-1]} (ms)" if latency_key.startswith("ttft")
                  else f"{latency_key} (ms)")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return png(fig)


def latency_throughput_plot(curves: pd.DataFrame, pct: str, slo: dict) -> bytes:
    """Goodput and latency percentiles against offered rate, one line per plan.

    curves: columns plan, rate_per_s, goodput_per_s, ttft_s_<pct>, tpot_s_<pct>.
    """
    fig, axes = plt.subplots(1, 3, figsize=(13.0, 3.8))
    for ax in axes:
        _style(ax)
    for i, (plan, g) in enumerate(curves.groupby("plan", sort=False)):
        c = PALETTE[i % len(PALETTE)]
        g = g.sort_values("rate_per_s")
        axes[0].plot(g["rate_per_s"], g["goodput_per_s"], "-o", color=c, markersize=4, label=plan)
        axes[1].plot(g["rate_per_s"], g[f"ttft_s_{pct}"] * 1e3, "-o", color=c, markersize=4)
        axes[2].plot(g["rate_per_s"], g[f"tpot_s_{pct}"] * 1e3, "-o", color=c, markersize=4)
    lim = curves["rate_per_s"].max() * 1.05
    axes[0].plot([0, lim], [0, lim], ":", color="#999999", linewidth=1, label="goodput = offered rate")
    for ax, key in ((axes[1], "ttft_s"), (axes[2], "tpot_s")):
        if slo.get(key):
            ax.axhline(slo[key] * 1e3, color=PALETTE[5], linestyle="--", linewidth=1, label="SLO")
            ax.legend(frameon=False, fontsize=8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        # Label only the 2× and 5× minor ticks, so a log axis spanning one decade still reads.
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
            lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
    axes[0].set_ylabel("goodput (req/s meeting the SLO)")
    axes[1].set_ylabel(f"TTFT {pct} (ms)")
    axes[2].set_ylabel(f"TPOT {pct} (ms)")
    for ax in axes:
        ax.set_xlabel("offered rate (requests/s)")
    axes[0].legend(frameon=False, fontsize=7.5, loc="upper left")
    fig.tight_layout()
    return png(fig)


def _iteration_kind(iterations: pd.DataFrame) -> np.ndarray:
    pre = iterations["n_prefill"].to_numpy() > 0
    dec = iterations["n_decode"].to_numpy() > 0
    return np.where(pre & dec, "mixed", np.where(pre, "prefill", "decode"))


def serving_timeline_plot(iterations: pd.DataFrame, start_s: float, end_s: float, max_replicas: int = 8) -> bytes:
    """Iterations of each replica between start_s and end_s as bars, coloured prefill / decode / mixed."""
    names = list(dict.fromkeys(iterations["replica"]))[:max_replicas]
    fig, ax = plt.subplots(figsize=(12.0, 0.55 * len(names) + 1.4))
    ax.spines[["top", "right"]].set_visible(False)
    it = iterations[(iterations["start_s"] + iterations["duration_s"] >= start_s) & (iterations["start_s"] <= end_s)]
    kinds = _iteration_kind(it)
    for row, name in enumerate(names):
        mine = (it["replica"] == name).to_numpy()
        for kind in ("decode", "prefill", "mixed"):
            sel = mine & (kinds == kind)
            if sel.any():
                starts_ms = (it["start_s"].to_numpy()[sel] - start_s) * 1e3
                spans = list(zip(starts_ms, it["duration_s"].to_numpy()[sel] * 1e3))
                ax.broken_barh(spans, (row - 0.35, 0.7), facecolors=KIND_COLOURS[kind], edgecolor="white",
                               linewidth=0.3)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(0, (end_s - start_s) * 1e3)
    ax.set_xlabel(f"time since {start_s:.2f} s (ms)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=KIND_COLOURS[k]) for k in ("prefill", "decode", "mixed")]
    ax.legend(handles, ["prefill only", "decode only", "prefill + decode (chunked)"], frameon=False, fontsize=8,
              ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return png(fig)


def kv_cache_plot(iterations: pd.DataFrame, max_replicas: int = 8) -> bytes:
    """Fraction of each replica's KV-cache capacity in use, at the start of every iteration."""
    fig, ax = plt.subplots(figsize=(12.0, 3.4))
    _style(ax)
    for i, name in enumerate(list(dict.fromkeys(iterations["replica"]))[:max_replicas]):
        g = iterations[iterations["replica"] == name]
        used = g["kv_used_tokens"].to_numpy(dtype=float) / np.maximum(g["kv_capacity_tokens"].to_numpy(dtype=float), 1)
        ax.plot(g["start_s"], used * 100, color=PALETTE[i % len(PALETTE)], linewidth=0.9, label=name)
    ax.set_ylim(0, None)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("KV cache in use (%)")
    ax.legend(frameon=False, fontsize=7.5, ncol=4)
    return png(fig)


def training_timeline_plot(events: list[dict], n_stages: int, max_stages: int = 16) -> bytes:
    """One iteration of a training plan: per pipeline stage, compute (F/B/W/optimizer) on the
    main lane and point-to-point / data-parallel traffic on thin lanes below it."""
    stages = min(n_stages, max_stages)
    fig, ax = plt.subplots(figsize=(12.0, 0.75 * stages + 1.4))
    ax.spines[["top", "right"]].set_visible(False)
    lanes = {0: (0.0, 0.5), 1: (0.52, 0.14), 2: (0.68, 0.14)}   # tid -> (offset, height) within a stage row
    # One bar collection per (stage, lane, colour): thousands of passes draw in one call each.
    spans: dict[tuple[int, int, str], list[tuple[float, float]]] = {}
    end_ms = 0.0
    for e in events:
        if e.get("ph") != "X" or e["pid"] >= stages or e["tid"] not in lanes:
            continue
        if e["tid"] == 0:
            name = str(e["name"])
            optimizer = name.startswith("optimizer")
            colour = KIND_COLOURS["optimizer"] if optimizer else KIND_COLOURS.get(name[:1], PALETTE[3])
        else:
            colour = PALETTE[4] if e["tid"] == 1 else PALETTE[6]
        spans.setdefault((e["pid"], e["tid"], colour), []).append((e["ts"] / 1e3, e["dur"] / 1e3))
        end_ms = max(end_ms, (e["ts"] + e["dur"]) / 1e3)
    for (pid, tid, colour), bars in spans.items():
        off, h = lanes[tid]
        ax.broken_barh(bars, (pid + off - 0.4, h), facecolors=colour, edgecolor="white", linewidth=0.2)
    ax.set_xlim(0, end_ms * 1.01 or 1.0)
    ax.set_yticks(range(stages), [f"stage {s}" for s in range(stages)], fontsize=8)
    ax.set_ylim(-0.5, stages - 0.1)
    ax.invert_yaxis()
    ax.set_xlabel("time in the iteration (ms)")
    legend = [("forward", KIND_COLOURS["F"]), ("backward", KIND_COLOURS["B"]), ("weight grad", KIND_COLOURS["W"]),
              ("optimizer", KIND_COLOURS["optimizer"]), ("p2p send", PALETTE[4]), ("data-parallel", PALETTE[6])]
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for _, c in legend]
    ax.legend(handles, [n for n, _ in legend], frameon=False, fontsize=8, ncol=6, loc="lower center",
              bbox_to_anchor=(0.5, 1.0))
    return png(fig)


def stacked_bar_plot(labels: list[str], parts: dict[str, list[float]], ylabel: str) -> bytes:
    """One stacked bar per label (e.g. a training plan's compute / communication / bubble times)."""
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) + 2.5), 3.6))
    _style(ax)
    bottom = np.zeros(len(labels))
    for i, (name, values) in enumerate(parts.items()):
        v = np.asarray(values, dtype=float)
        ax.bar(range(len(labels)), v, bottom=bottom, color=PALETTE[i % len(PALETTE)], label=name, width=0.6)
        bottom += v
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8, ncol=min(4, len(parts)), loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return png(fig)


def heatmaps_plot(panels: list[tuple[str, np.ndarray, str, str]], cbar_label: str) -> bytes:
    """Side-by-side heatmaps sharing one colour scale: panels of (title, matrix [rows, cols],
    x label, y label), e.g. tokens per expert per layer, tokens per GPU per layer for two placements."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 0.8, 3.8), squeeze=False)
    vmax = max(float(np.max(m)) for _, m, _, _ in panels) or 1.0
    im = None
    for ax, (title, m, xl, yl) in zip(axes[0], panels):
        im = ax.imshow(m, aspect="auto", cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xl, fontsize=8)
        ax.set_ylabel(yl, fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), label=cbar_label, shrink=0.9)
    return png(fig)


def line_plot(series: dict[str, tuple[list[float], list[float]]], xlabel: str, ylabel: str) -> bytes:
    """A few named (x, y) series on one axis (e.g. balancedness per layer for each policy)."""
    fig, ax = plt.subplots(figsize=(7.0, 3.4))
    _style(ax)
    for i, (name, (x, y)) in enumerate(series.items()):
        ax.plot(x, y, "-o", markersize=3, color=PALETTE[i % len(PALETTE)], label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(frameon=False, fontsize=8)
    return png(fig)


def pareto_png(rows: list[dict], front: list[dict], x_key: str, y_key: str, title: str = "",
               x_label: str = "", y_label: str = "", y_scale: float = 1.0, x_scale: float = 1.0) -> bytes:
    """Scatter of every row on (x_key, y_key), the Pareto-front rows joined; y multiplied by y_scale
    (e.g. 1e3 for ms). Used by `simcluster plan --out` for pareto.png."""
    fig, ax = plt.subplots(figsize=(7.0, 4.2))
    _style(ax)
    ok = [r for r in rows if r.get("meets_slo", True)]
    bad = [r for r in rows if not r.get("meets_slo", True)]
    if bad:
        ax.scatter([r[x_key] * x_scale for r in bad], [r[y_key] * y_scale for r in bad], s=36, facecolors="none",
                   edgecolors="#999999", label="misses the SLO")
    ax.scatter([r[x_key] * x_scale for r in ok], [r[y_key] * y_scale for r in ok], s=36, color=PALETTE[0],
               alpha=0.75, label="meets the SLO")
    f = sorted(front, key=lambda r: r[x_key])
    if f:
        ax.plot([r[x_key] * x_scale for r in f], [r[y_key] * y_scale for r in f], "-o", color=PALETTE[5],
                markersize=5, label="Pareto front")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(x_label or x_key)
    ax.set_ylabel(y_label or y_key)
    ax.legend(frameon=False, fontsize=8)
    return png(fig)


def predicted_vs_measured_png(measured_s, predicted_s, title: str) -> bytes:
    """Log-log scatter of predicted vs measured seconds with the y = x line and ±10% band."""
    m, p = np.asarray(measured_s, float), np.asarray(predicted_s, float)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    lo, hi = min(m.min(), p.min()) * 0.8, max(m.max(), p.max()) * 1.25
    x = np.array([lo, hi])
    ax.fill_between(x, x * 0.9, x * 1.1, color="#e6e6e6", label="±10%")
    ax.plot(x, x, color="#000000", linewidth=0.8)
    ax.scatter(m, p, s=10, color=PALETTE[0], alpha=0.8)
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured (s)",
           ylabel="predicted (s)", title=title)
    for axis in (ax.xaxis, ax.yaxis):      # decade labels only: minor labels collide on log axes
        axis.set_minor_formatter(plt.NullFormatter())
    ax.legend(loc="upper left", frameon=False)
    _style(ax)
    return png(fig)
