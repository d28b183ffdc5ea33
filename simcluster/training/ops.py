"""Training operator costs: forward, backward and optimizer work of one pipeline chunk per micro-batch.

The forward op list reuses the serving op builders of llm/ops.py (every token emits logits in
training). Backward costs follow the usual ratios: a GEMM's backward is two GEMMs of its forward's
size, one for the input gradient (B) and one for the weight gradient (W) (Narayanan et al. 2021
§3.2: backward ≈ 2× forward); fused attention's backward does ≈ 2.5× its forward FLOPs
(Dao 2023, FlashAttention-2 §3: five matmuls against two, the scores recomputed); elementwise
kernels read the output gradient and the saved input and write one gradient (≈ 2× forward bytes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from simcluster.cost.model import CostModel
from simcluster.cost.streaming_fit import ADAMW_FOREACH, ADAMW_FUSED, LOSS_BACKWARD, LOSS_FORWARD
from simcluster.llm import params
from simcluster.llm.ops import Op, gemm, linear_ops, prefill_attention_op, stage_layers
from simcluster.llm.spec import LlmSpec
from simcluster.training.placement import Groups, collective_s
from simcluster.training.plan import TrainingPlan
from simcluster.units import dtype_bytes

ATTENTION_BACKWARD_RATIO = 2.5     # FlashAttention-2 backward/forward FLOPs
ELEMENTWISE_BACKWARD_RATIO = 2.0
# Cross-entropy over fp32 logits: read the bf16 logits, write the fp32 copy, log-softmax reads it
# and writes its output (2 + 4 + 4 + 4 bytes per logit).
LOSS_BYTES_PER_LOGIT = 14.0
TRAINING_ATTENTION = "sdpa"


@dataclass(frozen=True)
class ChunkCost:
    """Seconds one GPU spends on one micro-batch of one pipeline chunk (virtual stage).

    forward_s / backward_input_s / backward_weight_s are kernel time; *_comm_s are the blocking
    communication inside those passes (TP all-reduces, EP all-to-all, the part of CP ring exchange
    and FSDP gathers that compute does not hide). backward_input_s includes recomputation.
    """

    index: int
    n_layers: int
    forward_s: float
    backward_input_s: float
    backward_weight_s: float
    forward_comm_s: float
    backward_comm_s: float
    send_bytes: float            # activations to the next chunk (gradients come back the same size)
    dense_params: float          # parameters held by one GPU (non-expert), unsharded by ZeRO
    expert_params: float
    flops: float                 # hardware FLOPs of F + B + W on one GPU, recomputation included
    device_fraction: float = 1.0  # share of a pass the GPU is busy (below 1 when the host bounds it)
    # Parameters whose gradient is complete only when the pass's backward ends: the input embedding
    # (its backward runs last; a tied LM head accumulates into the same tensor).
    late_grad_params: float = 0.0
    forward_host_s: float = 0.0   # host time to issue the forward's kernels (eager frameworks)
    backward_host_s: float = 0.0

    @property
    def forward_total_s(self) -> float:
        return self.forward_s + self.forward_comm_s

    @property
    def backward_total_s(self) -> float:
        return self.backward_input_s + self.backward_weight_s + self.backward_comm_s


def chunk_forward_ops(llm: LlmSpec, plan: TrainingPlan, index: int, n_chunks: int) -> list[Op]:
    """Forward ops of chunk `index` of `n_chunks` (= pp × virtual stages) for one micro-batch on one GPU."""
    tokens = plan.micro_batch * plan.seq_len // plan.cp
    imbalance = plan.moe_imbalance
    if plan.capacity_factor is not None:
        imbalance = min(imbalance, max(1.0, plan.capacity_factor))
    ops = linear_ops(llm, tokens, tokens, plan.tp, n_chunks, plan.ep, "bf16", index, imbalance)
    if not plan.vocab_parallel and plan.tp > 1 and index == n_chunks - 1:
        # A replicated LM head: every TP rank computes all logits.
        ops = [gemm("lm_head", tokens, llm.vocab_size, llm.hidden_size, "bf16") if o.name == "lm_head" else o
               for o in ops]
    ops = [streaming_op("loss.cross_entropy", o.shape["tokens"] * o.shape["hidden"] * LOSS_BYTES_PER_LOGIT,
                        o.flops, LOSS_FORWARD) if o.kind == "sampling" else o for o in ops if o.name != "pp.send"]
    if plan.param_dtype == "fp32" and plan.zero < 3:
        # Autocast casts each fp32 weight to bf16 once per forward: read 4 B, write 2 B.
        dense, expert = chunk_params(llm, plan, index, n_chunks)
        ops.append(streaming_op("amp.weight_cast", (dense + expert) * 6.0, 0.0))
    if plan.dtype != "bf16":
        scale = dtype_bytes(plan.dtype) / dtype_bytes("bf16")
        ops = [replace(o, dtype=plan.dtype, bytes=o.bytes * scale) if o.kind in ("gemm", "moe") else o
               for o in ops]
    if plan.sequence_parallel:
        # Norms, dropout and residual adds run on the 1/tp sequence shard (Korthikanti et al. 2022 §4.2.2).
        ops = [replace(o, flops=o.flops / plan.tp, bytes=o.bytes / plan.tp)
               if o.kind in ("norm", "elementwise") else o for o in ops]
    layers = len(stage_layers(llm, n_chunks, index))
    s = plan.seq_len
    # Causal pairs per sequence s(s+1)/2; load-balanced ring attention gives each CP rank 1/cp of them.
    pairs = plan.micro_batch * s * (s + 1) / 2.0 / plan.cp
    # Training runs attention through SDPA's dispatch (cuDNN's fused kernels on Hopper, as torch
    # and Transformer Engine do): priced from its own tables, the flash table where they are absent.
    attn = prefill_attention_op(llm, plan.micro_batch, tokens, plan.micro_batch * s, pairs, plan.tp, layers,
                                attention=TRAINING_ATTENTION)
    at = next(i for i, o in enumerate(ops) if o.kind == "rope") + 1
    return ops[:at] + [attn] + ops[at:]


def streaming_op(name: str, bytes_: float, flops: float, kernel: str | None = None) -> Op:
    """A memory-bound kernel moving `bytes_` through HBM (loss, casts, optimizer), shaped as the
    residual add the calibration measures (3 passes over tokens × 4096 bf16 elements), so a
    calibrated model times it at the measured streaming bandwidth for that many bytes; `kernel`
    names a measured streaming kernel (cost/streaming_fit.py) whose own rate takes precedence."""
    width = 4096
    shape = {"tokens": max(1.0, bytes_ / (3 * 2 * width)), "hidden": width}
    if kernel is not None:
        shape["kernel"] = kernel
    return Op(name, "elementwise", flops=flops, bytes=bytes_, dtype="bf16", shape=shape)


def chunk_params(llm: LlmSpec, plan: TrainingPlan, index: int, n_chunks: int) -> tuple[float, float]:
    """(dense, expert) parameters one GPU holds for chunk `index`: TP splits dense weights, EP (or TP)
    splits experts; the embedding sits on the first chunk, the LM head on the last."""
    dense = expert = 0.0
    for i in stage_layers(llm, n_chunks, index):
        layer = params.layer_params(llm, i)
        if llm.is_moe_layer(i):
            routed = llm.moe.n_experts * params.expert_params(llm)
            dense += (layer - routed) / plan.tp
            expert += routed / (plan.ep if plan.ep > 1 else plan.tp)
        else:
            dense += layer / plan.tp
    emb = llm.vocab_size * llm.hidden_size / (plan.tp if plan.vocab_parallel else 1)
    if index == 0:
        dense += emb
        if llm.position_embedding == "learned":
            dense += llm.max_position * llm.hidden_size
    if index == n_chunks - 1:
        dense += params.final_norm_params(llm)
        if not (llm.tie_embeddings and n_chunks == 1):
            dense += emb
    return dense, expert


def prefetch_pipeline_s(compute_s: float, comm_s: float, n: int) -> float:
    """n layers whose parameters are gathered one ahead (FSDP prefetch): the first gather is exposed,
    then each step takes the longer of this layer's compute and the next layer's gather.

    Two-stream software pipeline: T = comm + (n-1)·max(compute, comm) + compute.
    """
    if n <= 0:
        return 0.0
    return comm_s + (n - 1) * max(compute_s, comm_s) + compute_s


def _comm_ops_s(ops: list[Op], groups: Groups, cm: CostModel) -> float:
    total = 0.0
    for o in ops:
        if o.kind != "collective":
            continue
        grp = groups.tp if o.name.startswith("tp.") else groups.ep
        total += collective_s(o.collective, o.message_bytes, grp, cm) * o.repeat
    return total


def chunk_cost(llm: LlmSpec, plan: TrainingPlan, cm: CostModel, groups: Groups, index: int,
               n_chunks: int) -> ChunkCost:
    """Time one micro-batch of chunk `index` costs one GPU, by pass (see ChunkCost)."""
    ops = chunk_forward_ops(llm, plan, index, n_chunks)
    layers = len(stage_layers(llm, n_chunks, index))
    fwd = b_in = b_w = attn_fwd = flops = 0.0
    for o in ops:
        if o.kind == "collective":
            continue
        t = cm.op(o, cuda_graphs=False).time_s
        fwd += t
        f = o.flops * o.repeat
        flops += f
        if o.kind in ("gemm", "moe"):
            b_in += t
            b_w += t
            flops += 2 * f
        elif o.kind == "attention_prefill":
            attn_fwd += t
            b_in += ATTENTION_BACKWARD_RATIO * t
            flops += ATTENTION_BACKWARD_RATIO * f
        elif o.shape.get("kernel") == LOSS_FORWARD and cm.measures(LOSS_BACKWARD):
            b_in += cm.op(replace(o, name="loss.cross_entropy.backward", shape={**o.shape, "kernel": LOSS_BACKWARD}),
                          cuda_graphs=False).time_s
            flops += f
        else:
            b_in += ELEMENTWISE_BACKWARD_RATIO * t
            flops += f
    if plan.param_dtype == "fp32" and plan.zero < 3:
        # Autocast backward: each bf16 weight gradient is cast to the fp32 .grad (read 2 B, write 4 B).
        dense, expert = chunk_params(llm, plan, index, n_chunks)
        b_w += cm.op(streaming_op("amp.grad_cast", (dense + expert) * 6.0, 0.0), cuda_graphs=False).time_s
    comm_f = _comm_ops_s(ops, groups, cm)
    comm_b = comm_f     # the transposed collectives of backward move the same bytes
    if plan.recompute == "full":
        b_in += fwd
        comm_b += comm_f
        flops += sum(o.flops * o.repeat for o in ops if o.kind != "collective")
    elif plan.recompute == "selective":
        b_in += attn_fwd
        flops += sum(o.flops * o.repeat for o in ops if o.kind == "attention_prefill")
    if plan.cp > 1:
        # Ring attention (Liu et al. 2023): cp-1 K/V block exchanges per layer overlap the
        # blockwise attention compute; backward moves K/V and their gradients (twice the bytes).
        kv_heads = max(1, llm.n_kv_heads // plan.tp)
        kv_bytes = 2 * plan.micro_batch * plan.seq_len / plan.cp * kv_heads * llm.head_dim * 2
        step_s = collective_s("send_recv", kv_bytes, groups.cp, cm)
        per_layer_f = (plan.cp - 1) * step_s
        attn_layer = attn_fwd / max(layers, 1)
        comm_f += layers * max(0.0, per_layer_f - attn_layer)
        comm_b += layers * max(0.0, 2 * per_layer_f - ATTENTION_BACKWARD_RATIO * attn_layer)
    dense, expert = chunk_params(llm, plan, index, n_chunks)
    if index == 0 and "embedding" in {o.name for o in ops}:
        # The input embedding's backward: torch writes a dense fp32 gradient of the whole table
        # (zero-fill, 4 B a weight) and, for a tied LM head, adds it into the head's gradient
        # (read 2 × 4 B, write 4 B): 0.3 + 0.7 ms for Llama-3.2-1B's 262M-weight table on an H200.
        table = llm.vocab_size * llm.hidden_size / (plan.tp if plan.vocab_parallel else 1)
        b_w += cm.op(streaming_op("embedding.grad", table * (16.0 if llm.tie_embeddings else 4.0), 0.0),
                     cuda_graphs=False).time_s
    if plan.zero < 3 and groups.dp.size > 1:
        # Data-parallel gradients are scaled by 1/dp before their reduction (torch DDP divides each
        # bucket in place; Megatron scales its grad buffer): one read and one write of every gradient.
        grad_bytes = (dense + expert) * dtype_bytes(plan.grad_dtype)
        b_w += cm.op(streaming_op("dp.grad_scale", 2.0 * grad_bytes, 0.0), cuda_graphs=False).time_s
    if plan.zero == 3 and groups.dp.size > 1:
        fwd_copy, bwd_copy = fsdp_copy_bytes(dense + expert, groups.dp.size, plan.param_dtype, plan.grad_dtype)
        fwd += cm.op(streaming_op("fsdp.gather_copies", fwd_copy, 0.0), cuda_graphs=False).time_s
        b_w += cm.op(streaming_op("fsdp.gather_reduce_copies", bwd_copy, 0.0), cuda_graphs=False).time_s
    if plan.zero == 3 and groups.dp.size > 1 and layers:
        # FSDP: gather each layer's weights (compute dtype) before forward and again before backward,
        # prefetching the next layer; reduce-scatter its gradients (grad dtype) after backward.
        per_layer = (dense + expert) / layers
        gather_s = collective_s("all_gather", per_layer * dtype_bytes("bf16"), groups.dp, cm)
        scatter_s = collective_s("reduce_scatter", per_layer * dtype_bytes(plan.grad_dtype), groups.dp, cm)
        comm_f += prefetch_pipeline_s(fwd / layers, gather_s, layers) - fwd
        b_total = b_in + b_w
        comm_b += prefetch_pipeline_s(b_total / layers, gather_s + scatter_s, layers) - b_total + scatter_s
    act = plan.micro_batch * plan.seq_len / plan.cp * llm.hidden_size * dtype_bytes("bf16")
    send = act / plan.tp if plan.sequence_parallel else act
    late = llm.vocab_size * llm.hidden_size / (plan.tp if plan.vocab_parallel else 1) if index == 0 else 0.0
    return ChunkCost(index, layers, fwd, b_in, b_w, comm_f, comm_b, send, dense, expert, flops,
                     late_grad_params=min(late, dense))


def fsdp_copy_bytes(params: float, dp: int, param_dtype: str, grad_dtype: str) -> tuple[float, float]:
    """HBM bytes of the copies FSDP2 makes around its collectives for `params` parameters, in the
    forward and in the backward (torch.distributed.fsdp, fully_shard with a MixedPrecisionPolicy):
    before each all-gather the local shard is cast to the bf16 compute dtype (read the shard,
    write 2 B/param/dp) and copied into the gather buffer; after it the flat buffer is copied out
    into per-parameter tensors (read + write 2 B per full parameter). With reshard_after_forward
    the backward gathers again, then casts each bf16 gradient to the reduce dtype (2 + g B) and
    concatenates them into the reduce-scatter input (2g B)."""
    shard = params / dp
    gather = shard * (dtype_bytes(param_dtype) + 2 * 2.0) + params * 2 * 2.0
    g = dtype_bytes(grad_dtype)
    return gather, gather + params * (2.0 + g + 2 * g)


def adam_bytes_per_param(plan: TrainingPlan) -> float:
    """Device-memory traffic of one fused Adam(W) update per parameter: read the gradient, read and
    write both moments and the master (or the weight itself), write the low-precision weight copy."""
    state = dtype_bytes(plan.optimizer_state_dtype)
    master = dtype_bytes("fp32") if plan.master_weights else dtype_bytes(plan.param_dtype)
    copy = dtype_bytes(plan.param_dtype) if plan.master_weights else 0.0
    return dtype_bytes(plan.grad_dtype) + 4 * state + 2 * master + copy


def optimizer_op(plan: TrainingPlan, local_params: float, impl: str = "fused") -> Op:
    """One Adam(W) step over the parameters this GPU updates (its ZeRO shard when zero >= 1).
    ~12 FLOPs per parameter (moments, bias correction, sqrt, divide, weight decay). `impl`
    ('fused' or 'foreach', as torch.optim runs it) names the measured kernel rate to use."""
    return streaming_op("optimizer.adam", adam_bytes_per_param(plan) * local_params, 12.0 * local_params,
                        ADAMW_FUSED if impl == "fused" else ADAMW_FOREACH)
