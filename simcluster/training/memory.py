"""Training memory per GPU: weights, gradients, optimizer states, activations, buffers.

Sources: ZeRO (Rajbhandari et al. 2020 §3: 2Ψ weights + 2Ψ gradients + 12Ψ Adam states in mixed
precision; stages 1/2/3 shard states / + gradients / + weights over the Nd data-parallel ranks);
activations per layer from Korthikanti et al. 2022 "Reducing Activation Recomputation in Large
Transformer Models" §4 (sbh(34 + 5as/h) bytes without parallelism; Table 2 for tensor and sequence
parallelism and selective / full recomputation; §4.2.3 for the pipeline's in-flight micro-batches).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from simcluster.llm.spec import LlmSpec
from simcluster.training.ops import chunk_params
from simcluster.training.plan import TrainingPlan
from simcluster.units import dtype_bytes

# Cross-entropy in fp32 over the logits: the saved log-softmax (4 B), its gradient (4 B) and the
# fp32 upcast of the bf16 logits (4 B) coexist when backward starts at the loss.
LOSS_BYTES_PER_LOGIT = 12.0


def activation_bytes_per_layer(s: int, b: int, h: int, a: int, ffn: int, kv_hidden: int, tp: int = 1,
                               sequence_parallel: bool = False, recompute: str = "none",
                               gated: bool = True, dropout: bool = False, flash: bool = True,
                               autocast: bool = False) -> float:
    """Bytes one transformer layer keeps for backward for one micro-batch (b sequences of s tokens).

    Korthikanti et al. 2022 §4.1 count 16-bit tensors (2 B) and 1-byte dropout masks:
      attention 11sbh + 5as²b (QKV input 2, Q and K 4, V 2, projection input 2, mask 1; softmax
      output 2as²b, its mask as²b, dropout output 2as²b), MLP 19sbh (input 2, fc1 output 8,
      GeLU output 8, mask 1), two layer norms 4sbh: sbh(34 + 5as/h).
    Generalised here to GQA (K and V are kv_hidden wide), any FFN width, SwiGLU (gate and up
    outputs, SiLU output and the product feed backward: 8·ffn instead of 4·ffn), no dropout
    (modern LLMs train without it) and fused attention (flash: no s×s tensors, Dao et al. 2022).
    Tensor parallelism divides the tensors inside attention and MLP by tp; sequence parallelism
    also the norms, inputs and masks (Table 2). Selective recompute drops the s×s terms; full
    recompute keeps only each layer's input 2sbh (/tp with sequence parallelism).
    With gated=False, dropout=True, flash=False, ffn=4h, kv_hidden=h this is exactly sbh(34 + 5as/h).
    autocast: eager torch AMP over fp32 weights: the residual stream is fp32 (the norms save 4-byte
    inputs), every projection saves its own bf16 cast of its input (q, k, v: three; gate, up: two;
    autocast caches casts of weights only) and the attention output is copied by the head-merging
    reshape before o_proj: +12 bytes × h per token over the fused bf16 count.
    """
    sbh = s * b * h
    if recompute == "full":
        return 2.0 * sbh / (tp if sequence_parallel else 1)
    mask = 1.0 if dropout else 0.0
    # Split by TP: Q, K, V, projection input, the FFN's inner tensors.
    inner = s * b * (2 * h + 4 * kv_hidden + 2 * h) + s * b * (8 if gated else 4) * ffn
    # Replicated across TP unless sequence parallel: QKV input, MLP input, two norm inputs, masks.
    outer = sbh * (2 + 2 + 4 + 2 * mask)
    if autocast:
        # fp32 norm inputs (+4), extra q/k/v and gate/up casts (+6), the reshape copy (+2).
        outer += sbh * (4 + 6 + 2)
    scores = 0.0 if (flash or recompute == "selective") else (5.0 if dropout else 4.0) * a * s * s * b
    if sequence_parallel:
        return (inner + outer + scores) / tp
    return inner / tp + outer + scores / tp


def in_flight_micro_batches(plan: TrainingPlan, stage: int = 0) -> float:
    """Micro-batches whose activations pipeline `stage` holds at its peak, in units of the whole
    stage's layers.

    GPipe holds all m; 1F1B (and ZB-H1, Qi et al. 2023) stage s holds min(m, p - s);
    interleaved 1F1B stage 0 holds p(1 + (p-1)/(p·v)) (Korthikanti et al. 2022 §4.2.3).
    """
    m, p, v = plan.n_micro_batches, plan.pp, plan.virtual_stages
    if plan.schedule == "gpipe":
        return float(m)
    if plan.schedule == "interleaved" and v > 1:
        return min(float(m), (p - stage) * (1.0 + (p - 1) / (p * v)))
    return float(min(m, p - stage))


@dataclass(frozen=True)
class TrainingMemory:
    """Peak bytes on the most loaded GPU and how they split."""

    stage: int
    weight_bytes: float
    gradient_bytes: float
    optimizer_bytes: float
    activation_bytes: float
    loss_bytes: float
    buffer_bytes: float
    gpu_memory_bytes: float
    peak_memory_bytes: float

    @property
    def fits(self) -> bool:
        return self.peak_memory_bytes <= self.gpu_memory_bytes

    def as_record(self) -> dict:
        return {**asdict(self), "fits": self.fits}


def _stage_params(llm: LlmSpec, plan: TrainingPlan, stage: int) -> tuple[float, float, int]:
    n_chunks = plan.pp * plan.virtual_stages
    dense = expert = 0.0
    layers = 0
    for c in range(plan.virtual_stages):
        idx = c * plan.pp + stage
        d, e = chunk_params(llm, plan, idx, n_chunks)
        dense += d
        expert += e
        layers += llm.n_layers // n_chunks
    return dense, expert, layers


def fsdp_buffer_bytes(llm: LlmSpec, plan: TrainingPlan, params: float, layers: int,
                      stage: int) -> tuple[float, float, float]:
    """Unsharded FSDP (ZeRO-3) buffers on one GPU holding `params` parameters: (when backward
    starts at the loss, during the layers' backward, when backward ends).

    The root unit (FSDP2's fully_shard on the model: embedding and tied head) stays gathered
    (compute dtype) from forward to the end of backward (the root does not reshard after forward).
    When backward starts at the loss that is all: every layer resharded after its forward and the
    first backward all-gather is issued only by the root's pre-backward hook, once the loss's
    gradient reaches the logits. During the layers' backward, per layer unit: the gathered weights
    of the current and the prefetched layer (compute dtype) and one layer's unsharded gradient
    (compute dtype, then grad dtype for the reduce-scatter), beside the root's gradient (compute
    dtype, from the LM head's backward). When backward ends, the root's gradient, complete only
    then, is held unsharded in both dtypes before its reduce-scatter."""
    root = llm.vocab_size * llm.hidden_size / (plan.tp if plan.vocab_parallel else 1) if stage == 0 else 0.0
    root = min(root, params)
    per_layer = (params - root) / max(layers, 1)
    bf16, gb = dtype_bytes("bf16"), dtype_bytes(plan.grad_dtype)
    return root * bf16, root * 2 * bf16 + per_layer * (3 * bf16 + gb), root * (2 * bf16 + gb)


def stage_memory(llm: LlmSpec, plan: TrainingPlan, gpu_memory_bytes: float, stage: int,
                 optimizer_impl: str = "fused", persistent_grads: bool = True,
                 reserve_bytes: float = 0.0, keep_outputs: bool = False) -> TrainingMemory:
    """Peak memory of one GPU of pipeline `stage`.

    Peak = max(start of the first backward, the end of backward, the optimizer step); reserve_bytes
    (allocations outside the model, overheads.py) count in all three. persistent_grads: gradient buffers
    live across steps (Megatron, torch DDP buckets); False for a plain torch loop that frees them
    with zero_grad(set_to_none=True), so they do not exist when backward starts.
    optimizer_impl 'foreach' (torch AdamW default) allocates one state-sized temporary in the step.
    keep_outputs: the last stage keeps every micro-batch's bf16 logits until the step ends (torch.
    distributed.pipelining merges the outputs it returns; Megatron frees each after its loss), and
    a pipeline stage ends its backward with one more gradient-sized buffer (see end_peak).
    """
    dense, expert, layers = _stage_params(llm, plan, stage)
    shard_dense = plan.dp * plan.cp
    shard_expert = max(1, shard_dense // plan.ep)
    pb, gb = dtype_bytes(plan.param_dtype), dtype_bytes(plan.grad_dtype)
    sb = dtype_bytes(plan.optimizer_state_dtype)

    def sharded(n_dense: float, n_expert: float, on: bool) -> float:
        return n_dense / shard_dense + n_expert / shard_expert if on else n_dense + n_expert

    p = dense + expert
    weights = sharded(dense, expert, plan.zero >= 3) * pb
    grads = sharded(dense, expert, plan.zero >= 2) * gb
    per_param_state = 2 * sb + (dtype_bytes("fp32") if plan.master_weights else 0.0)
    states = sharded(dense, expert, plan.zero >= 1) * per_param_state
    # Autocast keeps a bf16 copy of fp32 weights from forward until backward has used it.
    compute_copy = p * dtype_bytes("bf16") if plan.param_dtype == "fp32" and plan.zero < 3 else 0.0

    kv_hidden = max(1, llm.n_kv_heads // plan.tp) * llm.head_dim * plan.tp
    ffn = llm.intermediate_size
    if llm.moe is not None:
        ffn = (llm.moe.top_k * plan.moe_imbalance + llm.moe.n_shared_experts) * llm.moe.expert_intermediate_size
    per_layer = activation_bytes_per_layer(plan.seq_len // plan.cp, plan.micro_batch, llm.hidden_size,
                                           llm.n_heads, int(ffn), kv_hidden, plan.tp,
                                           plan.sequence_parallel, plan.recompute,
                                           gated=llm.ffn_activation == "swiglu", flash=plan.flash_attention,
                                           autocast=plan.param_dtype == "fp32" and plan.zero < 3)
    in_flight = in_flight_micro_batches(plan, stage)
    activations = per_layer * layers * in_flight
    if plan.recompute == "full":
        # The layer being recomputed holds its full activations once.
        activations += activation_bytes_per_layer(plan.seq_len // plan.cp, plan.micro_batch, llm.hidden_size,
                                                  llm.n_heads, int(ffn), kv_hidden, plan.tp,
                                                  plan.sequence_parallel, "selective",
                                                  gated=llm.ffn_activation == "swiglu")
    tokens = plan.micro_batch * plan.seq_len / plan.cp
    loss = 0.0
    if stage == plan.pp - 1:
        logits = tokens * llm.vocab_size / (plan.tp if plan.vocab_parallel else 1)
        loss = logits * LOSS_BYTES_PER_LOGIT
        if keep_outputs and plan.pp > 1:
            loss += logits * dtype_bytes("bf16") * plan.n_micro_batches
    # Buffers that exist whatever the phase (ZeRO-1/2 bucket, MoE dispatch); FSDP's come and go.
    buffers = 0.0
    fsdp_start = fsdp_layers = end_buffers = 0.0
    if plan.zero == 3:
        fsdp_start, fsdp_layers, end_buffers = fsdp_buffer_bytes(llm, plan, p, layers, stage)
    elif plan.dp * plan.cp > 1 and plan.zero in (1, 2):
        # Distributed optimizer: the all-gather of updated weights lands in the weight buffer; one
        # bucket in flight for the reduce-scatter.
        buffers += plan.bucket_bytes
    if llm.moe is not None and plan.ep > 1:
        cf = plan.capacity_factor or plan.moe_imbalance
        buffers += 2 * tokens * llm.moe.top_k * cf * llm.hidden_size * dtype_bytes("bf16")

    grads_at_backward = grads if (persistent_grads or plan.grad_accum > 1 or plan.pp > 1) else 0.0
    held = weights + compute_copy + grads_at_backward + states + activations + buffers + reserve_bytes
    # Backward starts at the loss (its transient fp32 tensors); under FSDP the layers' gathers and
    # gradients come after it, once the loss's tensors are gone.
    backward_peak = held + loss + fsdp_start
    if plan.zero == 3:
        backward_peak = max(backward_peak, held + fsdp_layers)
    temp = sharded(dense, expert, plan.zero >= 1) * sb if optimizer_impl == "foreach" else 0.0
    step_peak = weights + grads + states + temp + buffers + reserve_bytes
    # The end of backward, activations freed and every gradient formed (not FSDP: its root gradient
    # is end_buffers). The embedding's weight gradient (V x h in the gradient dtype, the lookup's
    # dense backward, the last op of backward) forms beside the accumulated gradient it is then
    # added to (the tied LM head's, or the earlier micro-batches'); on a pipeline's last stage the
    # LM head's likewise. torch.distributed.pipelining (keep_outputs) ends its step with one more
    # gradient-sized buffer of the stage's parameters (4 bytes each in fp32): the host probes of
    # three models (4-layer 1B, 1B, 3B at 2 and 4 stages) all leave the same remainder, 0.2-0.35 GB,
    # once it is counted, and none without it.
    end_peak = 0.0
    if plan.zero < 3 and (stage == 0 or stage == plan.pp - 1):
        vocab = llm.vocab_size * llm.hidden_size / (plan.tp if plan.vocab_parallel else 1)
        end_peak = weights + grads + states + buffers + reserve_bytes + vocab * gb
        if keep_outputs and plan.pp > 1:
            end_peak += grads
    # FSDP's root gradient, unsharded, once backward has freed the activations.
    if end_buffers:
        end_peak = weights + grads + states + reserve_bytes + end_buffers
    peak = max(backward_peak, step_peak, end_peak)
    buffers += reserve_bytes + (fsdp_layers if plan.zero == 3 else 0.0)
    return TrainingMemory(stage, weights + compute_copy, grads, states + temp, activations, loss, buffers,
                          gpu_memory_bytes, peak)


def training_memory(llm: LlmSpec, plan: TrainingPlan, gpu_memory_bytes: float, optimizer_impl: str = "fused",
                    persistent_grads: bool = True, reserve_bytes: float = 0.0,
                    keep_outputs: bool = False) -> TrainingMemory:
    """The pipeline stage with the largest peak (stage 0 holds the most activations, the last the
    loss and often the LM head)."""
    stages = sorted({0, plan.pp - 1, min(1, plan.pp - 1)})
    return max((stage_memory(llm, plan, gpu_memory_bytes, s, optimizer_impl, persistent_grads, reserve_bytes,
                             keep_outputs)
                for s in stages),
               key=lambda m: m.peak_memory_bytes)


def states_bytes_per_param(plan: TrainingPlan) -> float:
    """Weights + gradients + Adam states per parameter before sharding (ZeRO §3: 16 with bf16
    weights and grads, fp32 master and moments; Megatron keeps fp32 main grads: 18)."""
    return (dtype_bytes(plan.param_dtype) + dtype_bytes(plan.grad_dtype) + 2 * dtype_bytes(plan.optimizer_state_dtype)
            + (4.0 if plan.master_weights else 0.0))


def fits_ratio(mem: TrainingMemory) -> float:
    return mem.peak_memory_bytes / mem.gpu_memory_bytes if mem.gpu_memory_bytes else math.inf
