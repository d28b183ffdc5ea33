"""Data and tensor parallel wrappings of the plain-torch Llama for training-step benchmarks.

Each `wrap_*` takes a model built on this rank's device with fp32 parameters and returns what a
step needs: the model to call, the optimizer, whether the step runs under bf16 autocast, how the
precision is described, and the data-parallel degree (how many distinct micro-batches a step sees).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Wrapped:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    autocast: bool
    precision: str
    data_parallel: int
    detail: str


AMP = "fp32 params + bf16 autocast, AdamW fp32 states"


def adamw(params, device: torch.device) -> torch.optim.Optimizer:
    """AdamW as large-scale trainers run it: the fused kernel on GPUs (one launch per param
    group, which also keeps DTensor dispatch off the critical path), foreach on a CPU."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, fused=fused,
                             foreach=None if fused else True)


def wrap_single(model: nn.Module, device: torch.device) -> Wrapped:
    return Wrapped(model, adamw(model.parameters(), device), True, AMP, 1, "one GPU")


def wrap_ddp(model: nn.Module, device: torch.device) -> Wrapped:
    from torch.nn.parallel import DistributedDataParallel as DDP
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
              gradient_as_bucket_view=True)
    return Wrapped(ddp, adamw(ddp.parameters(), device), True, AMP, dist.get_world_size(),
                   "DistributedDataParallel, 25 MiB buckets")


def _fully_shard_api():
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
    return fully_shard, MixedPrecisionPolicy


def wrap_fsdp(model: nn.Module, device: torch.device) -> Wrapped:
    """FSDP2: one shard unit per decoder block plus the root (embedding, norm, head); FULL_SHARD
    (parameters re-gathered for backward)."""
    fully_shard, MixedPrecisionPolicy = _fully_shard_api()
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in model.layers:
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=True)
    return Wrapped(model, adamw(model.parameters(), device), False,
                   "fp32 sharded params, bf16 compute via MixedPrecisionPolicy, fp32 reduce",
                   dist.get_world_size(), "FSDP2 fully_shard per block + root, FULL_SHARD")


def tp_plan():
    """Megatron-style split (Shoeybi et al. 2019): q/k/v and gate/up column-parallel, o and down
    row-parallel, so each block needs one all-reduce after attention and one after the MLP."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel
    return {
        "attn.q_proj": ColwiseParallel(), "attn.k_proj": ColwiseParallel(),
        "attn.v_proj": ColwiseParallel(), "attn.o_proj": RowwiseParallel(),
        "mlp.gate_proj": ColwiseParallel(), "mlp.up_proj": ColwiseParallel(),
        "mlp.down_proj": RowwiseParallel(),
    }


def wrap_tp(model: nn.Module, device: torch.device) -> Wrapped:
    """Tensor parallel over all ranks; embedding, norms and the LM head stay replicated (every
    rank sees the same batch, so their gradients agree without communication)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor
    from torch.distributed.tensor.parallel import parallelize_module
    world = dist.get_world_size()
    mesh = init_device_mesh(device.type, (world,))
    for block in model.layers:
        parallelize_module(block, mesh, tp_plan())
    sharded = [p for p in model.parameters() if isinstance(p, DTensor)]
    plain = [p for p in model.parameters() if not isinstance(p, DTensor)]
    # One param group per tensor kind: multi-tensor kernels do not mix DTensors and tensors.
    optimizer = adamw([{"params": sharded}, {"params": plain}], device)
    return Wrapped(model, optimizer, True, AMP, 1,
                   f"DTensor TP{world}: colwise q/k/v/gate/up, rowwise o/down; "
                   f"embedding and lm_head replicated")
