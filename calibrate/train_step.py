"""Training steps (forward, backward, AdamW step) of the plain-torch Llama-3.2-1B and -3B shapes,
on one GPU and under DDP, FSDP2, tensor and pipeline parallelism.

Timing (calibrate/step_timing.py): each point's step is built and warmed up (5 steps of its
shape), then a model family's points (the shallow probe with its model) are timed interleaved,
one step of each per round, so they all see the same host; a step is the host clock from its
start (after a barrier) to the device going idle, the slowest rank's median over at least 15-20
rounds and more until that median is known to +-2.5% (time_ci_low_s / time_ci_high_s: its 95%
interval; train_step_rounds.csv: every round); time_p10_s / time_p90_s give the spread. host_s is
the median time until the host has issued the whole step (step() returned, the device possibly
still running): the framework's own cost; host_forward_s / host_backward_s / host_optimizer_s split it by phase (not for the
pipeline). device_compute_s / device_comm_s / kernels_per_step come from one profiled step.
Each grid holds a host probe (micro-batch 1, 128 tokens: the GPU has almost nothing to do, so the
step time is the framework's host time) at two depths, so host time per layer and per step are
measured, not fitted. Peak memory is the largest torch.cuda.max_memory_allocated over the ranks
and the point's timed steps, less what other models timed beside it keep allocated.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import torch
import torch.distributed as dist

from calibrate.context import BenchContext
from calibrate.llama import LLAMA_3_2_1B, LLAMA_3_2_3B, SMOKE, Llama, lm_loss, probe_gqa
from calibrate.pipeline import PipelineStep
from calibrate.step_timing import (EXTRA_WALL_S, MAX_TIMED_STEPS, MIN_TIMED_STEPS, OOM, TARGET_CI_FRACTION,
                                   TIMED_STEPS, WARMUP_STEPS, StepTiming, cleanup, time_interleaved)
from calibrate.strategies import Wrapped, wrap_ddp, wrap_fsdp, wrap_single, wrap_tp

# Host probe: so few tokens that the GPU work is small beside the framework's host time.
HOST_PROBE = (1, 128)
# Balance probes (Llama-3.2-1B) of the strategies with collectives inside every layer's forward
# (TP's all-reduces, FSDP's all-gathers): near host/device balance those make host and device stall
# each other, which a host probe cannot see. Each sits where the strategy's host and device times
# meet on the H200s (measured at 2 / 4 GPUs: TP 179 / 201 ms of host issue beside 163 / 124 ms of
# compute kernels; FSDP 98 / 107 ms beside 97 / 100 ms).
BALANCE_PROBES = {"tp": (3, 4096), "fsdp": (5, 1024)}
# The probe at a second depth separates host time per layer from host time per step.
PROBE_LAYERS = 4
# DataParallelStep's host phases (empty for the pipeline, whose schedule interleaves them).
HOST_PHASE_COLUMNS = ("host_forward_s", "host_backward_s", "host_optimizer_s")


def train_grid(smoke: bool, strategy: str = "single"):
    """[(config, [(micro_batch, seq_len), ...])]: the host probes first, then per model from
    host-bound (1 x 1024 tokens) to GPU-bound (1B: 4 x 4096 tokens, 3B: 2 x 2048); the pipeline,
    which runs 2 x world micro-batches a step, stops at 2 x 2048 for both.  45-220 s per strategy
    and world size on H200s (5 warm-up steps, 15-20 rounds and then more until each median is
    known, ~1 s of set-up per point)."""
    if smoke:
        # Four KV heads and four layers: tensor and pipeline parallelism split them over 4 ranks.
        deep = replace(SMOKE, n_kv_heads=4, n_layers=8)
        return [(replace(deep, name=f"{SMOKE.name}-4l", n_layers=4), [(1, 16)]),
                (deep, [(1, 16), (2, 16)])]
    shallow = replace(LLAMA_3_2_1B, name=f"{LLAMA_3_2_1B.name}-{PROBE_LAYERS}l",
                      n_layers=PROBE_LAYERS)
    small = [HOST_PROBE, (1, 1024), (2, 2048)]
    if strategy == "pp":
        points_1b = small
    elif strategy == "tp":
        # DTensor TP is host-bound up to 4k tokens; its balance probe sits where host and device
        # times meet, to measure how they stall each other there (calibration, like the host probe).
        points_1b = [HOST_PROBE, (1, 1024), BALANCE_PROBES["tp"], (4, 4096)]
    elif strategy == "fsdp":
        points_1b = small + [BALANCE_PROBES["fsdp"], (4, 4096)]
    else:
        points_1b = small + [(4, 4096)]
    return [(shallow, [HOST_PROBE]), (LLAMA_3_2_1B, points_1b), (LLAMA_3_2_3B, small)]


class DataParallelStep:
    """One step of a model whose forward returns logits: forward, loss, backward, AdamW.
    host_phases_s: the host seconds the last call spent issuing forward + loss, backward, and the
    optimizer step + zero_grad (nothing in a step waits for the device, so these are issue times)."""

    def __init__(self, wrapped: Wrapped, ids, targets, device):
        self.wrapped, self.ids, self.targets, self.device = wrapped, ids, targets, device
        self.host_phases_s = (0.0, 0.0, 0.0)

    def __call__(self) -> None:
        w = self.wrapped
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=w.autocast):
            loss = lm_loss(w.model(self.ids), self.targets)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        w.optimizer.step()
        w.optimizer.zero_grad(set_to_none=True)
        self.host_phases_s = (t1 - t0, t2 - t1, time.perf_counter() - t2)


def data_parallel_step(wrapped: Wrapped, ids, targets, device) -> DataParallelStep:
    return DataParallelStep(wrapped, ids, targets, device)


def _batch(cfg, micro_batch, seq_len, device, seed):
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ids = torch.randint(0, cfg.vocab, (micro_batch, seq_len), generator=gen).to(device)
    targets = torch.randint(0, cfg.vocab, (micro_batch, seq_len), generator=gen).to(device)
    return ids, targets


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


def family(cfg) -> str:
    """A grid model's family: the shallow host probe belongs to the model it is cut from."""
    return cfg.name.removesuffix(f"-{PROBE_LAYERS}l")


def _time_group(group, strategy: str, device, gqa: str, grad_accum: int, smoke: bool,
                deadline_s: float = float("inf")):
    """([(cfg, mb, seq)], [StepTiming or error], {(name, mb, seq): (precision, detail, dp)}) of one
    model family's points timed interleaved; the models are freed when it returns."""
    wrapped, described = {}, {}     # cfg.name -> Wrapped; point -> (precision, detail, dp)

    def maker(cfg, points, mb, seq):
        def make():
            key = (cfg.name, mb, seq)
            if strategy == "pp":
                step = PipelineStep(cfg, device, mb, seq, grad_accum, gqa)
                described[key] = (step.precision, step.detail, 1)
                return step
            if cfg.name not in wrapped:
                torch.manual_seed(0)
                model = Llama(cfg, max_pos=max(s for _, s in points), device=device)
                model.set_gqa(gqa)
                wrapped[cfg.name] = wrap(strategy, model, device)
            w = wrapped[cfg.name]
            described[key] = (w.precision, w.detail, w.data_parallel)
            return data_parallel_step(w, *_batch(cfg, mb, seq, device, seed=1), device)
        # Each pipeline point builds its own stages; the other strategies share the model.
        return ((cfg.name, mb, seq) if strategy == "pp" else cfg.name), make

    makers = [maker(cfg, points, mb, seq) for cfg, points in group for mb, seq in points]
    # A point whose median is known leaves the rounds (the GPU-bound ones after the first rounds).
    timings = time_interleaved(makers, device, smoke, deadline_s, retire=True)
    rows = [(cfg, mb, seq) for cfg, points in group for mb, seq in points]
    wrapped.clear()
    return rows, timings, described


def run_strategy(ctx: BenchContext, strategy: str, grid=None, table_name="train_step.csv",
                 detail_suffix: str = "") -> None:
    """All (model, micro-batch, sequence) points of one strategy into train_step.csv; the points of
    one model family (the shallow probe with its model) are timed together, interleaved."""
    device, world = ctx.device, (dist.get_world_size() if dist.is_initialized() else 1)
    gqa = probe_gqa(device)
    grad_accum = 2 * world if strategy == "pp" else 1
    entries = grid or train_grid(ctx.smoke, strategy)
    groups = [[e for e in entries if family(e[0]) == f] for f in dict.fromkeys(family(c) for c, _ in entries)]
    rounds_name = table_name.replace(".csv", "_rounds.csv")
    with ctx.table(table_name) as out, ctx.table(rounds_name) as rounds_out:
        for group in groups:
            if ctx.expired():
                ctx.skipped += sum(len(points) for _, points in group)
                continue
            rows, timings, described = _time_group(group, strategy, device, gqa, grad_accum, ctx.smoke,
                                                   ctx.deadline_s)
            cleanup(device)
            for (cfg, mb, seq), timing in zip(rows, timings):
                suffix = detail_suffix
                if timing == OOM and len(rows) > 1 and not ctx.expired():
                    # Too large beside the other models of its family: timed alone (not interleaved).
                    _, (timing,), alone = _time_group([(cfg, [(mb, seq)])], strategy, device, gqa,
                                                      grad_accum, ctx.smoke, ctx.deadline_s)
                    described.update(alone)
                    suffix += "; timed alone (out of memory beside its family's other points)"
                    cleanup(device)
                if isinstance(timing, str):
                    ctx.note(f"train_step {cfg.name} {strategy} ws={world} mb={mb} s={seq}: {timing}")
                    continue
                _write_row(out, cfg, strategy, world, mb, seq, grad_accum, timing,
                           *described[cfg.name, mb, seq], suffix)
                for i, (step_s, host_s) in enumerate(timing.rounds):
                    rounds_out.add(model=cfg.name, strategy=strategy, world_size=world, micro_batch=mb,
                                   seq_len=seq, round=i, time_s=step_s, host_s=host_s)
    ctx.note(f"train_step {strategy} ws={world}: {WARMUP_STEPS} warm-up steps per point, then "
             f"{MIN_TIMED_STEPS}-{TIMED_STEPS} rounds of one step of each of a model's points "
             f"(interleaved, the order reversed every other round), then more until every "
             f"point's median is known to +-{TARGET_CI_FRACTION:.1%} (95% interval; a known point "
             f"leaves the rounds) or {EXTRA_WALL_S:.0f} s more or {MAX_TIMED_STEPS} rounds, median per point (host clock, "
             f"barrier + synchronize around each; automatic gc off and long-lived objects frozen "
             f"while timing), p10/p90 "
             f"and host issue time beside it; GQA via {gqa}; CPU affinity "
             f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} cores")
    if ctx.skipped:
        ctx.note(f"train_step {strategy}: time budget ran out, {ctx.skipped} points skipped")


def _write_row(out, cfg, strategy, world, mb, seq, grad_accum, timing: StepTiming, precision: str,
               detail: str, dp: int, detail_suffix: str) -> None:
    tokens = mb * seq * grad_accum * dp
    t, busy = timing.time_s, timing.device
    out.add(model=cfg.name, strategy=strategy, world_size=world, micro_batch=mb,
            seq_len=seq, grad_accum=grad_accum, time_s=t,
            peak_memory_bytes=timing.peak_bytes, tokens_per_s=tokens / t,
            precision=precision, n_layers=cfg.n_layers, detail=detail + detail_suffix,
            time_p10_s=timing.p10_s, time_p90_s=timing.p90_s, host_s=timing.host_s,
            timed_steps=timing.steps, sm_clock_mhz=timing.sm_clock_mhz,
            time_ci_low_s=timing.ci_low_s, time_ci_high_s=timing.ci_high_s,
            device_compute_s=busy.compute_s if busy else None,
            device_comm_s=busy.comm_s if busy else None,
            kernels_per_step=busy.kernels if busy else None,
            **dict(zip(HOST_PHASE_COLUMNS, timing.host_phases_s or (None,) * 3)))


def run_single(ctx: BenchContext) -> None:
    run_strategy(ctx, "single")
