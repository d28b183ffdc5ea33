"""Rich tables for the terminal. Formatting only: every number comes in computed."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def console_() -> Console:
    """A console that keeps wide tables readable when output is piped (rich assumes 80 columns)."""
    c = Console()
    return c if c.is_terminal else Console(width=200)


def _ms(x: float) -> str:
    return f"{x * 1e3:.2f}"


def print_step(result: dict, console: Console | None = None) -> None:
    console = console or console_()
    t = Table(title=f"{result['llm']} on {result['gpu']} TP{result['tp']} PP{result['pp']} "
                    f"({result['launch']}, {result['new_tokens']} new tokens)")
    for col in ("stage", "op", "kind", "×", "time ms", "method", "bound"):
        t.add_column(col, justify="right" if col in ("×", "time ms", "stage") else "left")
    for o in result["ops"]:
        t.add_row(str(o["stage"]), o["op"], o["kind"], str(o["repeat"]), _ms(o["time_s"]), o["method"], o["bound"])
    console.print(t)
    console.print(f"iteration time: [bold]{result['time_s'] * 1e3:.3f} ms[/bold]  (cost model: {result['cost_model']}; "
                  f"methods used: {', '.join(result['methods'])})")
    if result.get("host_source"):
        console.print(f"eager host: {result['host_per_kernel_s'] * 1e6:.1f} µs per kernel ({result['host_source']}), "
                      f"issued and run pipelined")


def print_plans(rows: list[dict], slo: dict, top: int, console: Console | None = None, title: str = "") -> None:
    console = console or console_()
    t = Table(title=title or "Serving plans, cheapest first")
    cols = ["rank", "GPU", "TP", "replicas", "GPUs", "USD/h", "TTFT p50 ms", "TTFT p90 ms", "TPOT p50 ms",
            "TPOT p90 ms", "req/s", "tok/s out", "SLO att.", "meets SLO"]
    for c in cols:
        t.add_column(c, justify="left" if c == "GPU" else "right")
    for i, r in enumerate(rows[:top], 1):
        t.add_row(str(i), r["gpu"], str(r["tp"]), str(r["replicas"]), str(r["gpus"]), f"{r['usd_per_hour']:.2f}",
                  _ms(r["ttft_s_p50"]), _ms(r["ttft_s_p90"]), _ms(r["tpot_s_p50"]), _ms(r["tpot_s_p90"]),
                  f"{r['request_throughput_per_s']:.2f}", f"{r['output_token_throughput_per_s']:.0f}",
                  f"{r['slo_attainment']:.1%}", "yes" if r["meets_slo"] else "no")
    console.print(t)


def print_pruned(pruned: list[dict], console: Console | None = None) -> None:
    if not pruned:
        return
    console = console or console_()
    t = Table(title="Dropped candidates")
    for c in ("plan", "stage", "reason"):
        t.add_column(c)
    for p in pruned:
        t.add_row(p["plan"], p["stage"], p["reason"])
    console.print(t)


def print_summary(summary: dict, console: Console | None = None, title: str = "Serving simulation") -> None:
    console = console or console_()
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k, v in summary.items():
        if isinstance(v, float):
            v = f"{v * 1e3:.2f} ms" if k.endswith(("_mean", "_p50", "_p90", "_p99")) and "_s_" in k else f"{v:.4g}"
        t.add_row(k, str(v))
    console.print(t)
