"""simcluster estimate train-step, and `simulate` on training scenarios: one training iteration's
time, per-GPU peak memory, MFU and where the time goes."""

from __future__ import annotations

import argparse
import json

from simcluster.commands.arguments import positive_int as _positive_int
from simcluster.cost import cost_model_for
from simcluster.hardware.node import default_node_for
from simcluster.llm.spec import load_llm
from simcluster.training.plan import RECOMPUTE, SCHEDULES, TrainingPlan
from simcluster.training.simulate import TrainingResult, simulate_training

EPILOG = """examples:
  simcluster estimate train-step --gpu h200-sxm --llm llama-3.2-1b --gpus 4 --dp 4 --zero 3 --micro-batch 4 --seq 2048 --json
  simcluster estimate train-step --gpu h100-sxm --llm llama-3.1-70b --gpus 64 --tp 8 --pp 4 --dp 2 \\
      --global-batch 256 --schedule interleaved --virtual-stages 5 --sequence-parallel --recompute selective
"""


def result_record(plan: TrainingPlan, llm_name: str, result: TrainingResult, cost_model: str) -> dict:
    """The JSON-ready record of one simulated iteration (SI units)."""
    return {
        "gpu": plan.gpu, "llm": llm_name, "gpus": plan.n_gpus, "dp": plan.dp, "tp": plan.tp, "pp": plan.pp,
        "cp": plan.cp, "ep": plan.ep, "zero": plan.zero, "micro_batch": plan.micro_batch, "seq_len": plan.seq_len,
        "global_batch": plan.global_batch_size, "grad_accum": plan.grad_accum, "schedule": plan.schedule,
        "virtual_stages": plan.virtual_stages, "recompute": plan.recompute,
        "sequence_parallel": plan.sequence_parallel, "dtype": plan.dtype, "cost_model": cost_model,
        **result.summary(),
    }


def estimate_train_step(gpu: str, llm: str, gpus: int, dp: int = 1, tp: int = 1, pp: int = 1, cp: int = 1,
                        ep: int = 1, zero: int = 0, micro_batch: int = 1, seq: int = 2048,
                        global_batch: int | None = None, recompute: str = "none", sequence_parallel: bool = False,
                        schedule: str = "1f1b", virtual_stages: int = 1, nodes: int | None = None,
                        dtype: str = "bf16", cost_model: str = "calibrated", trace: bool = False) -> dict:
    """One training iteration as a JSON-ready dict: time_s, peak_memory_bytes (per GPU), mfu,
    tokens_per_s, breakdown {compute_s, exposed_comm_s, bubble_s, optimizer_s}, fits, memory.

    >>> r = estimate_train_step("h100-sxm", "llama-3.1-8b", gpus=8, dp=8, zero=1, seq=4096, cost_model="roofline")
    >>> r["fits"], r["time_s"] > 0
    (True, True)
    """
    spec = load_llm(llm)
    node = default_node_for(gpu)
    cm = cost_model_for(gpu, cost_model, node)
    plan = TrainingPlan(gpu=gpu, n_gpus=gpus, seq_len=seq, micro_batch=micro_batch, global_batch=global_batch,
                        dp=dp, tp=tp, pp=pp, cp=cp, ep=ep, zero=zero, sequence_parallel=sequence_parallel,
                        schedule=schedule, virtual_stages=virtual_stages, recompute=recompute, dtype=dtype,
                        nodes=nodes)
    result = simulate_training(spec, plan, cm, node, record_trace=trace)
    record = result_record(plan, spec.name, result, cost_model)
    if trace:
        record["trace"] = result.chrome_trace()
    return record


def add_train_step_parser(esub) -> argparse.ArgumentParser:
    """The `estimate train-step` subparser."""
    t = esub.add_parser("train-step", help="one training iteration (forward, backward, optimizer step)",
                        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--gpu", required=True)
    t.add_argument("--llm", required=True, help="catalog name or path to a Hugging Face config.json")
    t.add_argument("--gpus", type=_positive_int, required=True, help="GPUs in all (dp×tp×pp×cp)")
    for flag in ("--dp", "--tp", "--pp", "--cp", "--ep"):
        t.add_argument(flag, type=_positive_int, default=1)
    t.add_argument("--zero", type=int, default=0, choices=[0, 1, 2, 3], help="ZeRO stage (3 = FSDP full shard)")
    t.add_argument("--micro-batch", dest="micro_batch", type=_positive_int, default=1)
    t.add_argument("--seq", type=_positive_int, default=2048, help="sequence length (tokens)")
    t.add_argument("--global-batch", dest="global_batch", type=_positive_int, default=None,
                   help="sequences per iteration (default micro-batch × dp)")
    t.add_argument("--recompute", default="none", choices=list(RECOMPUTE))
    t.add_argument("--sequence-parallel", dest="sequence_parallel", action="store_true")
    t.add_argument("--schedule", default="1f1b", choices=list(SCHEDULES))
    t.add_argument("--virtual-stages", dest="virtual_stages", type=_positive_int, default=1)
    t.add_argument("--nodes", type=_positive_int, default=None)
    t.add_argument("--dtype", default="bf16", choices=["bf16", "fp8"])
    t.add_argument("--cost-model", dest="cost_model", default="calibrated", choices=["calibrated", "roofline"])
    t.add_argument("--json", action="store_true")
    return t


def print_train_step(r: dict) -> None:
    from rich.table import Table

    from simcluster.report.tables import console_
    console = console_()
    t = Table(title=f"{r['llm']} on {r['gpus']}× {r['gpu']}: DP{r['dp']} TP{r['tp']} PP{r['pp']} CP{r['cp']} "
                    f"EP{r['ep']} ZeRO-{r['zero']}, {r['schedule']}, {r['grad_accum']} micro-batches")
    t.add_column("quantity")
    t.add_column("value", justify="right")
    t.add_row("iteration time", f"{r['time_s'] * 1e3:.2f} ms")
    for k, v in r["breakdown"].items():
        t.add_row(f"  {k.removesuffix('_s').replace('_', ' ')}", f"{v * 1e3:.2f} ms ({v / r['time_s']:.0%})")
    t.add_row("MFU", f"{r['mfu']:.1%}")
    t.add_row("tokens/s", f"{r['tokens_per_s']:,.0f}")
    m = r["memory"]
    t.add_row("peak memory / GPU", f"{r['peak_memory_bytes'] / 2**30:.1f} GiB of {m['gpu_memory_bytes'] / 2**30:.0f}")
    for k in ("weight_bytes", "gradient_bytes", "optimizer_bytes", "activation_bytes", "loss_bytes", "buffer_bytes"):
        t.add_row(f"  {k.removesuffix('_bytes')}", f"{m[k] / 2**30:.2f} GiB")
    t.add_row("fits", "yes" if r["fits"] else "[bold red]NO[/bold red]")
    console.print(t)


def train_step(args) -> int:
    """`simcluster estimate train-step`: print a table or JSON; exit 0 (1 when the plan does not fit)."""
    r = estimate_train_step(args.gpu, args.llm, args.gpus, args.dp, args.tp, args.pp, args.cp, args.ep, args.zero,
                            args.micro_batch, args.seq, args.global_batch, args.recompute, args.sequence_parallel,
                            args.schedule, args.virtual_stages, args.nodes, args.dtype, args.cost_model)
    if args.json:
        print(json.dumps(r, indent=2, default=float))
    else:
        print_train_step(r)
    return 0 if r["fits"] else 1


def simulate_training_scenario(scenario, args) -> int:
    """`simcluster simulate` on a scenario of kind 'training': summary table or JSON; with --out DIR
    writes summary.json, trace.json (Chrome/Perfetto timeline) and breakdown.csv."""
    from simcluster.commands.inputs import scenario_llm
    from simcluster.scenario import ScenarioError
    tr = scenario.training
    if tr is None:
        raise ScenarioError(f"{args.scenario}: training: required when kind is 'training'")
    spec = scenario_llm(scenario)
    node = default_node_for(tr.gpu)
    cm = cost_model_for(tr.gpu, scenario.cost_model, node)
    fields = tr.model_dump()
    plan = TrainingPlan(**fields)
    result = simulate_training(spec, plan, cm, node, record_trace=bool(args.out))
    record = {"scenario": scenario.name, **result_record(plan, spec.name, result, scenario.cost_model)}
    if args.out:
        import pandas as pd

        from simcluster.report.output import write_results
        rows = [{"component": k.removesuffix("_s"), "time_s": v, "fraction": v / result.time_s}
                for k, v in result.breakdown().items()]
        write_results(args.out, {"summary.json": record, "trace.json": result.chrome_trace(),
                                 "breakdown.csv": pd.DataFrame(rows),
                                 "devices.csv": pd.DataFrame(result.devices)})
    if args.json:
        print(json.dumps(record, indent=2, default=float))
    else:
        print_train_step(record)
    return 0 if result.fits else 1
