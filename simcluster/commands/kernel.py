"""simcluster estimate kernel|collective: the calibrated time of one kernel or one collective."""

from __future__ import annotations

import json

from simcluster.cost import cost_model_for
from simcluster.hardware.node import load_node
from simcluster.llm.ops import Op, gemm
from simcluster.units import dtype_bytes, parse_bytes


class KernelArgumentError(ValueError):
    """A kernel shape the command cannot time."""


def _record(cm, op: Op) -> dict:
    est = cm.op(op)
    t = est.kernel_s
    return {"gpu": cm.gpu.name, "kind": op.kind, "shape": op.shape, "dtype": op.dtype, "time_s": t,
            "method": est.method, "bound": est.bound, "flops": op.flops, "bytes": op.bytes,
            "achieved_tflops": op.flops / t / 1e12 if t > 0 else 0.0,
            "achieved_bytes_per_s": op.bytes / t if t > 0 else 0.0}


def gemm_estimate(gpu: str, m: int, n: int, k: int, dtype: str = "bf16", cost_model: str = "calibrated") -> dict:
    """Time of C[m,n] = A[m,k] B[k,n] on `gpu`."""
    return _record(cost_model_for(gpu, cost_model), gemm("gemm", m, n, k, dtype))


def attention_estimate(gpu: str, phase: str, batch: int, seq_len: int, context_len: int, heads: int,
                       kv_heads: int, head_dim: int, cost_model: str = "calibrated") -> dict:
    """Time of one attention call: prefill of seq_len new tokens after context_len cached ones, or
    decode of one token per sequence over context_len keys. Counts as llm.ops does."""
    if heads % kv_heads:
        raise KernelArgumentError(f"--heads {heads} is not a multiple of --kv-heads {kv_heads}")
    b, d = 2.0, head_dim          # bf16 bytes per element, head dim
    if phase == "prefill":
        s, c = seq_len, context_len
        pairs = batch * s * (c + (s + 1) / 2.0)
        op = Op("attn.prefill", "attention_prefill", flops=2.0 * heads * 2 * d * pairs,
                bytes=batch * s * heads * 2 * d * b + batch * (s + c) * 2 * kv_heads * d * b,
                shape={"batch": batch, "seq_len": s, "context_len": s + c, "n_heads": heads,
                       "n_kv_heads": kv_heads, "head_dim": d})
    elif phase == "decode":
        ctx = batch * (context_len + 1)
        op = Op("attn.decode", "attention_decode", flops=2.0 * heads * 2 * d * ctx,
                bytes=ctx * 2 * kv_heads * d * b + batch * heads * 2 * d * b,
                shape={"batch": batch, "context_len": context_len + 1, "n_heads": heads,
                       "n_kv_heads": kv_heads, "head_dim": d})
    else:
        raise KernelArgumentError(f"--phase must be prefill or decode, got {phase!r}")
    return _record(cost_model_for(gpu, cost_model), op)


def collective_estimate(gpu: str, op: str, size_bytes: float, gpus: int, nodes: int = 1,
                        node: str | None = None, cost_model: str = "calibrated") -> dict:
    """Time of one NCCL-convention collective of size_bytes over `gpus` GPUs in each of `nodes` nodes."""
    if gpus < 1 or nodes < 1:
        raise KernelArgumentError(f"--gpus and --nodes must be ≥ 1, got {gpus} and {nodes}")
    cm = cost_model_for(gpu, cost_model, load_node(node) if node else None)
    scope = "inter" if nodes > 1 else "intra"
    if gpus > cm.links.gpus_per_node:
        raise KernelArgumentError(f"--gpus {gpus} exceeds the {cm.links.gpus_per_node} GPUs of one node; "
                                  f"--gpus counts GPUs per node, give --nodes")
    n = gpus * nodes
    coll = Op(op, "collective", bytes=size_bytes, collective=op, group_size=n, message_bytes=size_bytes,
              scope=scope)
    est = cm.op(coll)
    t = est.kernel_s
    from simcluster.cost.collectives import bus_factor
    return {"gpu": gpu, "op": op, "bytes": size_bytes, "gpus": gpus, "nodes": nodes, "time_s": t,
            "method": est.method, "bound": "network", "algbw_bytes_per_s": size_bytes / t if t > 0 else 0.0,
            "busbw_bytes_per_s": size_bytes / t * bus_factor(op, n) if t > 0 else 0.0}


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    from simcluster.report.tables import console_
    con = console_()
    for key, value in result.items():
        con.print(f"{key:>22}: {value:.4g}" if isinstance(value, float) else f"{key:>22}: {value}")


def estimate_kernel(args) -> int:
    if args.kernel == "gemm":
        dtype_bytes(args.dtype)
        result = gemm_estimate(args.gpu, args.m, args.n, args.k, args.dtype, args.cost_model)
    else:
        result = attention_estimate(args.gpu, args.phase, args.batch, args.seq_len, args.context_len, args.heads,
                                    args.kv_heads, args.head_dim, args.cost_model)
    _print(result, args.json)
    return 0


def estimate_collective(args) -> int:
    result = collective_estimate(args.gpu, args.op, parse_bytes(args.bytes), args.gpus, args.nodes, args.node,
                                 args.cost_model)
    _print(result, args.json)
    return 0


EPILOG = """examples:
  simcluster estimate kernel gemm --gpu h100-sxm --m 1024 --n 4096 --k 4096 --dtype bf16 --json
  simcluster estimate kernel attention --gpu h200-sxm --phase decode --batch 64 --context-len 4096 --heads 32 --kv-heads 8 --head-dim 128
  simcluster estimate collective --gpu h100-sxm --op all_reduce --bytes 64MiB --gpus 8 --nodes 2
"""


def add_kernel_parsers(esub) -> None:
    """`estimate kernel gemm|attention` and `estimate collective` under the estimate subparsers."""
    import argparse

    from simcluster.cost.collectives import COLLECTIVES

    from simcluster.commands.arguments import positive_int as positive

    def common(p) -> None:
        p.add_argument("--gpu", required=True)
        p.add_argument("--cost-model", default="calibrated", choices=["calibrated", "roofline"])
        p.add_argument("--json", action="store_true")

    fmt = argparse.RawDescriptionHelpFormatter
    k = esub.add_parser("kernel", help="one GEMM or attention kernel", epilog=EPILOG, formatter_class=fmt)
    ksub = k.add_subparsers(dest="kernel", required=True)
    g = ksub.add_parser("gemm", help="C[m,n] = A[m,k] B[k,n]", epilog=EPILOG, formatter_class=fmt)
    common(g)
    for dim in ("--m", "--n", "--k"):
        g.add_argument(dim, type=positive, required=True)
    g.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp8"])
    a = ksub.add_parser("attention", help="prefill or decode attention", epilog=EPILOG, formatter_class=fmt)
    common(a)
    a.add_argument("--phase", required=True, choices=["prefill", "decode"])
    a.add_argument("--batch", type=positive, default=1)
    a.add_argument("--seq-len", type=positive, default=1, help="new tokens per sequence (prefill)")
    a.add_argument("--context-len", type=int, default=0,
                   help="cached tokens per sequence (prefill: before the new ones; decode: the KV cache)")
    a.add_argument("--heads", type=positive, default=32)
    a.add_argument("--kv-heads", type=positive, default=8)
    a.add_argument("--head-dim", type=positive, default=128)
    c = esub.add_parser("collective", help="one NCCL collective", epilog=EPILOG, formatter_class=fmt)
    common(c)
    c.add_argument("--op", required=True, choices=list(COLLECTIVES))
    c.add_argument("--bytes", required=True, help="NCCL-convention size, e.g. 64MiB")
    c.add_argument("--gpus", type=positive, required=True, help="GPUs per node taking part")
    c.add_argument("--nodes", type=positive, default=1)
    c.add_argument("--node", default=None, help="catalog node (default: the GPU's default node)")
