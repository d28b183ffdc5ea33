"""GEMM: C[m, n] = A[m, k] @ W[n, k]^T, the layout of a linear layer, in bf16 and fp8 (e4m3).

fp8 goes through torch._scaled_mm with per-tensor scales (the way fp8 inference engines call
cuBLASLt); rows are written only for shapes where it runs.
"""

from __future__ import annotations

import torch

from calibrate.context import BenchContext
from calibrate.shapes import gemm_misaligned_points, gemm_points
from calibrate.timing import rotation_count

# Points above this many FLOPs take ~30 ms a call and add nothing a fitted curve cannot: the
# tensor cores are saturated long before.
MAX_POINT_FLOP = 2e13


def fp8_supported(device: torch.device) -> str | None:
    """None if torch._scaled_mm runs e4m3 on this device, else why not (one line)."""
    if device.type != "cuda" or not hasattr(torch, "_scaled_mm"):
        return "torch._scaled_mm needs a CUDA device"
    try:
        a = torch.randn(32, 32, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(32, 32, device=device).to(torch.float8_e4m3fn)
        one = torch.ones((), device=device)
        torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"


def gemm_call(dtype: str, sets, scale=None):
    """fn(i) computing set i's product; sets[i] = [A (m, k), W (n, k)]."""
    if dtype == "bf16":
        return lambda i: torch.mm(sets[i][0], sets[i][1].t())
    return lambda i: torch._scaled_mm(sets[i][0], sets[i][1].t(), scale_a=scale, scale_b=scale,
                                      out_dtype=torch.bfloat16)


def run(ctx: BenchContext) -> None:
    dtypes = ["bf16"]
    why_not = fp8_supported(ctx.device)
    if why_not is None:
        dtypes.append("fp8")
    else:
        ctx.note(f"gemm: fp8 rows omitted ({why_not})")
    torch_dtype = {"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn}
    scale = torch.ones((), device=ctx.device)
    failures: dict[str, int] = {}
    with ctx.table("gemm.csv") as out:
        for m, n, k, source in gemm_points(ctx.smoke):
            if ctx.expired():
                ctx.skipped += 1
                continue
            flop = 2.0 * m * n * k
            if flop > MAX_POINT_FLOP:
                continue
            for dtype in dtypes:
                elem = 2 if dtype == "bf16" else 1
                n_sets = rotation_count((m * k + n * k) * elem, ctx.timer.l2_bytes)
                sets = ctx.pool.sets([(m, k), (n, k)], torch_dtype[dtype], n_sets)
                try:
                    t, how = ctx.timer.measure(gemm_call(dtype, sets, scale), n_sets)
                except Exception as exc:
                    key = f"{dtype} {type(exc).__name__}"
                    failures[key] = failures.get(key, 0) + 1
                    continue
                out.add(m=m, n=n, k=k, dtype=dtype, time_s=t, source=source, timing=how,
                        tflops=flop / t / 1e12)
    for key, count in failures.items():
        ctx.note(f"gemm: {count} shapes failed with {key}")
    if ctx.skipped:
        ctx.note(f"gemm: time budget ran out, {ctx.skipped} shapes not measured")


def run_misaligned(ctx: BenchContext) -> None:
    """bf16 GEMMs whose k or n is not a multiple of 8 (row strides off 16 bytes), for the fit."""
    with ctx.table("gemm_misaligned.csv") as out:
        for m, n, k, source in gemm_misaligned_points(ctx.smoke):
            if ctx.expired():
                ctx.skipped += 1
                continue
            n_sets = rotation_count((m * k + n * k) * 2, ctx.timer.l2_bytes)
            sets = ctx.pool.sets([(m, k), (n, k)], torch.bfloat16, n_sets)
            try:
                t, how = ctx.timer.measure(gemm_call("bf16", sets), n_sets)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as exc:
                ctx.note(f"gemm_misaligned {m}x{n}x{k}: {type(exc).__name__}")
                continue
            out.add(m=m, n=n, k=k, dtype="bf16", time_s=t, source=source, timing=how,
                    tflops=2.0 * m * n * k / t / 1e12)
    if ctx.skipped:
        ctx.note(f"gemm_misaligned: time budget ran out, {ctx.skipped} shapes not measured")
