"""simcluster estimate step: the predicted time of one forward iteration, op by op."""

from __future__ import annotations

import json

from simcluster.cost import cost_model_for
from simcluster.hardware.gpu import load_gpu
from simcluster.llm.ops import Batch, forward_ops
from simcluster.llm.spec import load_llm


def estimate_step(gpu: str, llm: str, tp: int = 1, pp: int = 1, ep: int = 1,
                  prefill: list[tuple[int, int]] = (), decode: list[tuple[int, int]] = (),
                  cuda_graphs: bool = True, dtype: str = "bf16", kv_dtype: str | None = None,
                  cost_model: str = "calibrated", host_per_kernel_s: float | None = None) -> dict:
    """One forward iteration (all pipeline stages in sequence) as a JSON-ready dict.

    prefill: (B, S) pairs = B sequences of S new tokens; decode: (B, L) = B sequences at context L.
    Eager (cuda_graphs False): the framework's host issues the kernels one by one, pipelined with
    the device (cost/host_issue.py), at `host_per_kernel_s` per listed kernel, by default the rate
    measured for this GPU's calibration host (the host probes of its model_forward.csv); a GPU
    without one prices each op's launches at the bare launch gap (launch.csv or the default).
    """
    spec = load_llm(llm)
    load_gpu(gpu)
    if not prefill and not decode:
        raise ValueError("give at least one --prefill BxS or --decode BxL")
    if cuda_graphs and host_per_kernel_s is not None:
        raise ValueError("--host-per-kernel-us: applies to --eager only (a CUDA-graph replay issues no kernels from Python)")
    if spec.n_heads % tp:
        raise ValueError(f"--tp {tp}: {spec.name} has {spec.n_heads} attention heads, not divisible by {tp}")
    if pp > spec.n_layers:
        raise ValueError(f"--pp {pp}: {spec.name} has only {spec.n_layers} layers")
    batch = Batch(prefill=tuple((s, 0) for b, s in prefill for _ in range(b)),
                  decode=tuple(L for b, L in decode for _ in range(b)))
    cm = cost_model_for(gpu, cost_model)
    host_source = None
    if not cuda_graphs:
        if host_per_kernel_s is not None:
            host_source = "given"
        else:
            from simcluster.cost.host_issue import measured_host_per_kernel_s
            host_per_kernel_s = measured_host_per_kernel_s(gpu)
            host_source = f"profiles/measured/{gpu}/model_forward.csv host probes" if host_per_kernel_s else None
    stages = []
    total = 0.0
    ops_out = []
    for stage in range(pp):
        ops = forward_ops(spec, batch, tp, pp, ep, dtype, kv_dtype or dtype, stage)
        it = cm.eager_iteration(ops, host_per_kernel_s) if host_source else cm.iteration(ops, cuda_graphs)
        total += it.time_s
        stages.append(it.time_s)
        for rec in it.breakdown():
            ops_out.append({"stage": stage, **rec})
    methods = sorted({o["method"] for o in ops_out})
    return {
        "gpu": gpu, "llm": spec.name, "tp": tp, "pp": pp, "ep": ep, "dtype": dtype,
        "launch": "cuda_graphs" if cuda_graphs else ("eager" if host_source else "eager (launch gaps)"),
        "host_per_kernel_s": host_per_kernel_s if host_source else None, "host_source": host_source,
        "prefill": [f"{b}x{s}" for b, s in prefill], "decode": [f"{b}x{L}" for b, L in decode],
        "new_tokens": batch.new_tokens, "time_s": total, "stage_time_s": stages,
        "cost_model": cost_model, "methods": methods, "ops": ops_out,
    }


def estimate(args) -> int:
    if args.what == "step":
        result = estimate_step(args.gpu, args.llm, args.tp, args.pp, args.ep, args.prefill, args.decode,
                               args.cuda_graphs, args.dtype, args.kv_dtype, args.cost_model,
                               None if args.host_per_kernel_us is None else args.host_per_kernel_us * 1e-6)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            from simcluster.report.tables import print_step
            print_step(result)
        return 0
    if args.what == "train-step":
        from simcluster.commands.train_step import train_step
        return train_step(args)
    if args.what in ("kernel", "collective"):
        from simcluster.commands.kernel import estimate_collective, estimate_kernel
        return estimate_kernel(args) if args.what == "kernel" else estimate_collective(args)
    raise ValueError(f"unknown estimate target {args.what!r}")
