"""Pipeline-parallel training step of the plain-torch Llama via torch.distributed.pipelining.

The decoder blocks are split evenly over the ranks; the first stage also holds the embedding and
the last the final norm and LM head.  A pipeline cannot share one tensor between two stages, so
the embedding and LM head are untied here (the parameter count then exceeds the tied model's).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from calibrate.llama import Llama, LlamaConfig, lm_loss
from calibrate.strategies import AMP, adamw


class Stage(nn.Module):
    """Blocks [first, last) of the decoder, with the embedding and/or head at the ends."""

    def __init__(self, model: Llama, first: int, last: int, is_first: bool, is_last: bool):
        super().__init__()
        self.embed = model.embed if is_first else None
        self.layers = nn.ModuleList(model.layers[first:last])
        self.norm = model.norm if is_last else None
        self.lm_head = model.lm_head if is_last else None
        self.register_buffer("cos", model.cos, persistent=False)
        self.register_buffer("sin", model.sin, persistent=False)

    def forward(self, x):
        if self.embed is not None:
            x = self.embed(x)
        s = x.shape[1]
        for layer in self.layers:
            x = layer(x, self.cos[:s], self.sin[:s])
        if self.lm_head is not None:
            x = self.lm_head(self.norm(x))
        return x


def stage_bounds(n_layers: int, n_stages: int, stage: int) -> tuple[int, int]:
    """Block range of one stage; the first stages take the remainder."""
    base, extra = divmod(n_layers, n_stages)
    first = stage * base + min(stage, extra)
    return first, first + base + (1 if stage < extra else 0)


class PipelineStep:
    """One optimizer step: `n_micro` micro-batches through the schedule, then AdamW."""

    def __init__(self, cfg: LlamaConfig, device: torch.device, micro_batch: int, seq_len: int,
                 n_micro: int, gqa: str, seed: int = 0):
        from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
        rank, world = dist.get_rank(), dist.get_world_size()
        untied = LlamaConfig(**{**cfg.__dict__, "tied": False})
        torch.manual_seed(seed)
        full = Llama(untied, max_pos=seq_len, device=device)
        full.set_gqa(gqa)
        first, last = stage_bounds(cfg.n_layers, world, rank)
        self.stage_module = Stage(full, first, last, rank == 0, rank == world - 1)
        del full
        stage = PipelineStage(self.stage_module, rank, world, device)
        self.optimizer = adamw(self.stage_module.parameters(), device)
        self.rank, self.world, self.device = rank, world, device
        gen = torch.Generator(device="cpu").manual_seed(seed)
        shape = (micro_batch * n_micro, seq_len)
        self.ids = torch.randint(0, cfg.vocab, shape, generator=gen).to(device)
        self.targets = torch.randint(0, cfg.vocab, shape, generator=gen).to(device)
        try:
            self.schedule = Schedule1F1B(stage, n_micro, loss_fn=lm_loss)
        except Exception:
            self.schedule = ScheduleGPipe(stage, n_micro, loss_fn=lm_loss)
        name = "GPipe" if isinstance(self.schedule, ScheduleGPipe) else "1F1B"
        self.precision = AMP + "; embedding and lm_head untied"
        self.detail = f"torch.distributed.pipelining {name}, {world} stages, {n_micro} micro-batches"

    def __call__(self) -> None:
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            if self.rank == 0:
                self.schedule.step(self.ids)
            elif self.rank == self.world - 1:
                self.schedule.step(target=self.targets)
            else:
                self.schedule.step()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
