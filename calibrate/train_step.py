"""Training steps (forward, backward, AdamW step) of the plain-torch Llama-3.2-1B and -3B shapes,
on one GPU and under DDP, FSDP2, tensor and pipeline parallelism.

A step's time is the host clock from the step's start to the device going idle, median over a
few steps after warm-up, the slowest rank's median.  Peak memory is the largest
torch.cuda.max_memory_allocated over the ranks, reset after warm-up.
"""

from __future__ import annotations

import gc
import statistics
import time

import torch
import torch.distributed as dist

from calibrate.context import BenchContext
from calibrate.llama import LLAMA_3_2_1B, LLAMA_3_2_3B, SMOKE, Llama, lm_loss, probe_gqa
from calibrate.pipeline import PipelineStep
from calibrate.strategies import Wrapped, wrap_ddp, wrap_fsdp, wrap_single, wrap_tp

WARMUP_STEPS = 3
TIMED_STEPS = 5


def train_grid(smoke: bool):
    """[(config, [(micro_batch, seq_len), ...])]: cheaper points first within each model."""
    if smoke:
        return [(SMOKE, [(1, 16), (2, 16)])]
    points = [(mb, s) for s in (1024, 2048) for mb in (1, 2, 4)]
    return [(LLAMA_3_2_1B, points), (LLAMA_3_2_3B, points)]


def _max_over_ranks(value: float, device) -> float:
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step, device, smoke: bool) -> tuple[float, int]:
    """(median step seconds, peak bytes), each the maximum over ranks."""
    for _ in range(1 if smoke else WARMUP_STEPS):
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(2 if smoke else TIMED_STEPS):
        if dist.is_initialized():
            dist.barrier()
        _sync(device)
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    return (_max_over_ranks(statistics.median(times), device),
            int(_max_over_ranks(float(peak), device)))


def data_parallel_step(wrapped: Wrapped, ids, targets, device):
    """One step of a model whose forward returns logits: forward, loss, backward, AdamW."""
    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=wrapped.autocast):
            loss = lm_loss(wrapped.model(ids), targets)
        loss.backward()
        wrapped.optimizer.step()
        wrapped.optimizer.zero_grad(set_to_none=True)
    return step


def _batch(cfg, micro_batch, seq_len, device, seed):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(0, cfg.vocab, (micro_batch, seq_len), generator=gen).to(device)
    targets = torch.randint(0, cfg.vocab, (micro_batch, seq_len), generator=gen).to(device)
    return ids, targets


def _agree_ok(ok: bool, device) -> bool:
    """True only if every rank succeeded, so all ranks skip a failed point together."""
    return _max_over_ranks(0.0 if ok else 1.0, device) == 0.0


def _cleanup(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def wrap(strategy: str, model, device) -> Wrapped:
    if strategy == "single":
        return wrap_single(model, device)
    if strategy == "ddp":
        return wrap_ddp(model, device)
    if strategy == "fsdp":
        return wrap_fsdp(model, device)
    if strategy == "tp":
        return wrap_tp(model, device)
    raise ValueError(f"train_step: unknown strategy {strategy!r}")


def run_strategy(ctx: BenchContext, strategy: str, grid=None, table_name="train_step.csv",
                 detail_suffix: str = "") -> None:
    """All (model, micro-batch, sequence) points of one strategy into train_step.csv."""
    device, world = ctx.device, (dist.get_world_size() if dist.is_initialized() else 1)
    gqa = probe_gqa(device)
    with ctx.table(table_name) as out:
        for cfg, points in grid or train_grid(ctx.smoke):
            if ctx.expired():
                ctx.skipped += len(points)
                continue
            wrapped = None
            if strategy != "pp":
                torch.manual_seed(0)
                model = Llama(cfg, max_pos=max(s for _, s in points), device=device)
                model.set_gqa(gqa)
                wrapped = wrap(strategy, model, device)
            for mb, seq in points:
                if ctx.expired():
                    ctx.skipped += 1
                    continue
                grad_accum = 2 * world if strategy == "pp" else 1
                ok, err = True, ""
                try:
                    if strategy == "pp":
                        step = PipelineStep(cfg, device, mb, seq, grad_accum, gqa)
                        precision, detail = step.precision, step.detail
                        dp = 1
                    else:
                        ids, targets = _batch(cfg, mb, seq, device, seed=1)
                        step = data_parallel_step(wrapped, ids, targets, device)
                        precision, detail, dp = wrapped.precision, wrapped.detail, \
                            wrapped.data_parallel
                    t, peak = time_steps(step, device, ctx.smoke)
                except torch.cuda.OutOfMemoryError:
                    ok, err = False, "out of memory"
                except Exception as exc:
                    ok, err = False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                step = None
                if wrapped is not None:
                    wrapped.optimizer.zero_grad(set_to_none=True)
                _cleanup(device)
                if not _agree_ok(ok, device):
                    ctx.note(f"train_step {cfg.name} {strategy} ws={world} mb={mb} s={seq}: "
                             f"{err or 'failed on another rank'}")
                    continue
                tokens = mb * seq * grad_accum * dp
                out.add(model=cfg.name, strategy=strategy, world_size=world, micro_batch=mb,
                        seq_len=seq, grad_accum=grad_accum, time_s=t, peak_memory_bytes=peak,
                        tokens_per_s=tokens / t, precision=precision, n_layers=cfg.n_layers,
                        detail=detail + detail_suffix)
            wrapped = model = None
            _cleanup(device)
    ctx.note(f"train_step {strategy} ws={world}: {WARMUP_STEPS} warm-up steps, median of "
             f"{TIMED_STEPS} timed steps; GQA via {gqa}")
    if ctx.skipped:
        ctx.note(f"train_step {strategy}: time budget ran out, {ctx.skipped} points skipped")


def run_single(ctx: BenchContext) -> None:
    run_strategy(ctx, "single")
