"""simcluster calibrate run|fit|report: measure a GPU, fit its cost model, show its accuracy."""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
from pathlib import Path

from simcluster.cost.calibration import fit_calibration, write_fit
from simcluster.cost.tables import load_tables, measured_gpus, measured_root
from simcluster.hardware.gpu import load_gpu

FAMILY_ORDER = ("gemm_bf16", "gemm_fp8", "attention_prefill", "attention_decode", "attention_prefill_sdpa",
                "attention_decode_sdpa", "moe", "elementwise",
                "collectives", "collectives_unmeasured_world", "forward_prefill", "forward_decode", "forward_prefill_unprobed",
                "forward_decode_unprobed")


def run_command(gpu: str, out: str | None, ranks: str | None, smoke: bool) -> list[str]:
    """The `python -m calibrate run` command line for one GPU type."""
    cmd = [sys.executable, "-m", "calibrate", "run", "--out", out or f"profiles/measured/{gpu}"]
    if ranks:
        cmd += ["--ranks", ranks]
    if smoke:
        cmd += ["--smoke", "--device", "cpu"]
    return cmd


def calibrate_run(args) -> int:
    load_gpu(args.gpu)
    cmd = run_command(args.gpu, args.out, args.ranks, args.smoke)
    print(shlex.join(cmd))
    if args.print_only:
        return 0
    if importlib.util.find_spec("torch") is None:
        print("simcluster: error: calibrate run needs torch and a GPU (pip install simcluster[calibrate])",
              file=sys.stderr)
        return 2
    if not args.smoke and not _cuda_available():
        print("simcluster: error: calibrate run needs a CUDA GPU (torch sees none); --smoke checks the code "
              "path on the CPU", file=sys.stderr)
        return 2
    return subprocess.call(cmd)


def _cuda_available() -> bool:
    """Ask torch in a child process, so this process never imports it."""
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)
    return probe.returncode == 0 and probe.stdout.strip() == "True"


def _gpus(names: list[str] | None) -> list[str]:
    names = names or measured_gpus()
    for n in names:
        load_gpu(n)
    if not names:
        raise ValueError(f"{measured_root()}: no measured GPU folder holds gemm.csv; run `simcluster calibrate run` first")
    return names


def calibrate_fit(args) -> int:
    """Fit each GPU's tables and write <folder>/fit.json."""
    written = []
    for name in _gpus(args.gpu):
        folder = Path(args.dir) / name if args.dir else None
        tables = load_tables(name, folder)
        if not tables.frames:
            raise ValueError(f"{tables.folder}: no measured tables for GPU {name!r}")
        cal = fit_calibration(tables, load_gpu(name), args.split)
        written.append(str(write_fit(cal, tables.folder)))
    for path in written:
        print(path)
    return 0


def accuracy_rows(names: list[str], folder_root: str | None = None):
    """(summary rows of every GPU, predictions frame of every GPU)."""
    import pandas as pd

    from simcluster.report.accuracy import accuracy_report
    from simcluster.cost.calibrated import nearest_measured_gpu
    from simcluster.cost.calibration import load_calibration
    from simcluster.report.accuracy import summarize, transfer_predictions
    rows, preds = [], []
    order = {f: i for i, f in enumerate(FAMILY_ORDER)}
    for name in names:
        folder = Path(folder_root) / name if folder_root else None
        tables = load_tables(name, folder)
        summary, p = accuracy_report(tables, load_gpu(name))
        # The 'transferred' path: this GPU predicted from the nearest other measured GPU.
        others = [load_gpu(n) for n in measured_gpus(Path(folder_root) if folder_root else None) if n != name]
        source = nearest_measured_gpu(load_gpu(name), others)
        if source is not None:
            src_folder = Path(folder_root) / source.name if folder_root else None
            t = transfer_predictions(load_calibration(source, src_folder), tables, load_gpu(name))
            t["family"] = t["family"] + "_from_" + source.name
            summary += summarize(t)
            p = pd.concat([p, t], ignore_index=True)
        rows += sorted(summary, key=lambda r: (order.get(r["family"], 99), r["family"]))
        preds.append(p)
    return rows, (pd.concat(preds, ignore_index=True) if preds else pd.DataFrame())


def markdown_table(rows: list[dict]) -> str:
    lines = ["| GPU | family | held-out points | MAPE % | p90 APE % | max APE % |",
             "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['gpu']} | {r['family']} | {r['n']} | {r['mape_pct']:.1f} | "
                     f"{r['p90_ape_pct']:.1f} | {r['max_ape_pct']:.1f} |")
    return "\n".join(lines) + "\n"


def calibrate_report(args) -> int:
    rows, preds = accuracy_rows(_gpus(args.gpu), args.dir)
    if args.out:
        from simcluster.report.plots import predicted_vs_measured_png
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "accuracy.md").write_text(markdown_table(rows))
        (out / "accuracy.json").write_text(json.dumps(rows, indent=2) + "\n")
        preds.to_csv(out / "predictions.csv", index=False)
        for (gpu, family), g in preds.groupby(["gpu", "family"], sort=True):
            (out / f"{gpu}_{family}.png").write_bytes(
                predicted_vs_measured_png(g["measured_s"], g["predicted_s"], f"{gpu} {family}"))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.table import Table

    from simcluster.report.tables import console_
    table = Table(title="Cost-model accuracy on held-out measurements")
    for col in ("GPU", "family", "n", "MAPE %", "p90 APE %", "max APE %"):
        table.add_column(col, justify="right" if col not in ("GPU", "family") else "left")
    for r in rows:
        table.add_row(r["gpu"], r["family"], str(r["n"]), f"{r['mape_pct']:.1f}", f"{r['p90_ape_pct']:.1f}",
                      f"{r['max_ape_pct']:.1f}")
    console_().print(table)
    if args.out:
        console_().print(f"wrote {args.out}/accuracy.md, accuracy.json, predictions.csv and one PNG per family")
    return 0


def calibrate(args) -> int:
    return {"run": calibrate_run, "fit": calibrate_fit, "report": calibrate_report}[args.action](args)


EPILOG = """examples:
  simcluster calibrate run --gpu h100-sxm
  simcluster calibrate fit --gpu h100-sxm
  simcluster calibrate report --out out/accuracy
"""


def add_calibrate_parser(sub) -> None:
    """`calibrate run|fit|report` under the top-level subparsers."""
    import argparse
    fmt = argparse.RawDescriptionHelpFormatter
    c = sub.add_parser("calibrate", help="measure GPUs, fit the cost model, report its accuracy",
                       epilog=EPILOG, formatter_class=fmt)
    csub = c.add_subparsers(dest="action", required=True)
    r = csub.add_parser("run", help="run the GPU microbenchmarks (needs torch and a GPU)", epilog=EPILOG,
                        formatter_class=fmt)
    r.add_argument("--gpu", required=True, help="catalog GPU name the measurements are filed under")
    r.add_argument("--out", default=None, help="output folder (default profiles/measured/<gpu>)")
    r.add_argument("--ranks", default=None, help="multi-GPU part at these world sizes, e.g. 2,4")
    r.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the code path")
    r.add_argument("--print", dest="print_only", action="store_true", help="print the command, do not run it")
    f = csub.add_parser("fit", help="fit measured tables and write fit.json", epilog=EPILOG, formatter_class=fmt)
    f.add_argument("--gpu", action="append", default=None, help="GPU (repeatable; default: every measured one)")
    f.add_argument("--split", default="all", choices=["all", "fit"],
                   help="'all' rows (default) or the fit split only (held-out shapes left out)")
    f.add_argument("--dir", default=None, help="root holding <gpu>/ folders (default profiles/measured)")
    p = csub.add_parser("report", help="accuracy on held-out measurements", epilog=EPILOG, formatter_class=fmt)
    p.add_argument("--gpu", action="append", default=None, help="GPU (repeatable; default: every measured one)")
    p.add_argument("--dir", default=None, help="root holding <gpu>/ folders (default profiles/measured)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default=None, metavar="DIR", help="write accuracy.md/.json, predictions.csv, PNG plots")
