"""What a kernel costs inside a graph of different kernels, beside a graph of the same kernel.

Every microbenchmark replays one kernel kind back to back; a model's decode step replays ~30
different kernels a layer, each reading the one before it.  Here the small single-kernel ops of
that step (RMSNorm, add, mul, neg, SiLU, copy, cat on one token of 4096 bf16 values) run as a
dependent chain, first each op alone ('same'), then cycling through all of them ('mixed'), each
chain captured in one CUDA graph.  time_per_kernel_s of 'mixed' minus the mean of the 'same'
chains is the extra cost of switching kernels that the single-kind tables do not hold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from calibrate.context import BenchContext

HIDDEN = 4096
CHAIN = 64           # kernels per chain of one op; the mixed chain runs CHAIN rounds of every op


def small_ops(device):
    """name -> fn(x) -> new x, one kernel each on a (1, HIDDEN) bf16 tensor."""
    w = torch.ones(HIDDEN, device=device, dtype=torch.bfloat16)
    y = torch.full((1, HIDDEN), 0.5, device=device, dtype=torch.bfloat16)
    bufs = [torch.empty(1, HIDDEN, device=device, dtype=torch.bfloat16) for _ in range(2)]
    half = HIDDEN // 2
    return {
        "rmsnorm": lambda x: F.rms_norm(x, (HIDDEN,), w, 1e-5),
        "add": lambda x: x + y,
        "mul": lambda x: x * y,
        "neg": lambda x: -x,
        "silu": lambda x: F.silu(x),
        # Into the buffer x is not: a copy onto itself launches nothing.
        "copy": lambda x: bufs[x.data_ptr() == bufs[0].data_ptr()].copy_(x),
        "cat": lambda x: torch.cat((x[:, half:], x[:, :half]), dim=-1),
    }


def run(ctx: BenchContext) -> None:
    ops = small_ops(ctx.device)
    start = torch.randn(1, HIDDEN, device=ctx.device, dtype=torch.bfloat16)
    n = 4 if ctx.smoke else CHAIN

    def chain(sequence):
        def fn(i):
            x = start
            for op in sequence:
                x = op(x)
            return x
        return fn

    same = []
    with ctx.table("kernel_switch.csv") as out:
        for name, op in ops.items():
            t, how = ctx.timer.measure(chain([op] * n), 1)
            same.append(t / n)
            out.add(chain="same", op=name, n_kernels=n, time_s=t, time_per_kernel_s=t / n,
                    timing=how)
        mixed = list(ops.values()) * n
        t, how = ctx.timer.measure(chain(mixed), 1)
        out.add(chain="mixed", op="+".join(ops), n_kernels=len(mixed), time_s=t,
                time_per_kernel_s=t / len(mixed), timing=how)
    extra = t / len(mixed) - sum(same) / len(same)
    ctx.note(f"kernel_switch: {len(mixed) / len(ops):.0f} rounds of {len(ops)} ops; per kernel "
             f"{t / len(mixed) * 1e6:.3f} us mixed vs {sum(same) / len(same) * 1e6:.3f} us same "
             f"(mean): {extra * 1e6:+.3f} us a switch")
