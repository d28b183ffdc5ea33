"""What an eager framework adds to the op-level model: host time to issue kernels, and memory
held outside the model's tensors. Zero by default (a compiled / CUDA-graph framework such as
Megatron-LM at scale); for plain eager PyTorch the host figures and the memory reserve are solved
from measured host probes only (steps of so few tokens that the GPU idles, at two depths and per
model: validation.py), never from the rows they are checked against; the issue exponent and the
overlap slowdown, which a probe cannot see, are left at inf and 0 there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Share of a layer's host work spent issuing its forward vs its backward kernels: eager backward
# launches about two kernels per forward kernel (a gradient for the input and one for the weight).
FORWARD_HOST_SHARE = 1.0 / 3.0


@dataclass(frozen=True)
class FrameworkOverheads:
    """host_s_per_layer: host seconds to issue one transformer layer's forward and backward kernels
    for one micro-batch (Python, dispatcher, autograd, launches); a pass takes at least its share of
    that, however fast the GPU. memory_reserve_bytes: allocated bytes outside weights, gradients,
    optimizer states and activations (workspaces, caches), counted in every peak.
    overlap_slowdown: see below."""

    host_s_per_layer: float = 0.0
    memory_reserve_bytes: float = 0.0
    overlap_slowdown: float = 0.0
    # host_s_per_step: host work once per step beyond the layers (embedding, loss, hooks, optimizer
    # dispatch). The host issues it after the last pass, ahead of the GPU (simulate.replay_iteration):
    # it is exposed only where it outlasts the device's remaining work.
    host_s_per_step: float = 0.0

    # overlap_slowdown: compute running beside a data-parallel collective on the same GPU is slowed
    # by this fraction of the overlapped time (NCCL kernels occupy SMs and HBM bandwidth; in the
    # recorded DDP trace, elementwise kernels ran 1.3-1.8x longer while an all-reduce ran).

    # issue_exponent p: a pass whose kernels the host issues in h seconds and the GPU runs in d
    # lasts (h^p + d^p)^(1/p) (pass_time_s); inf is max(h, d), a launch queue that always keeps
    # the slower side busy.
    issue_exponent: float = math.inf
    # Share of a layer's host work spent on its forward (the rest on its backward): where a
    # probe's host time is split by phase it is measured (0.29-0.46 in the H200 probes: DTensor
    # and FSDP hooks weigh on the forward), else FORWARD_HOST_SHARE.
    forward_host_share: float = FORWARD_HOST_SHARE

    def pass_time_s(self, device_s: float, host_s: float) -> float:
        return pass_time_s(device_s, host_s, self.issue_exponent)

    def forward_host_s(self, layers: int) -> float:
        return layers * self.host_s_per_layer * self.forward_host_share

    def backward_host_s(self, layers: int) -> float:
        return layers * self.host_s_per_layer * (1.0 - self.forward_host_share)


def pass_time_s(device_s: float, host_s: float, exponent: float = math.inf) -> float:
    """Wall seconds of a pass whose kernels the host issues in host_s while the GPU runs them in
    device_s. CUDA's launch queue lets the host run ahead, so far from balance the slower side sets
    the time (max). Near balance each side stalls the other (a burst of short kernels drains the
    queue, a long kernel fills it and blocks the launches), which the p-norm (h^p + d^p)^(1/p)
    adds: 2^(1/p) - 1 at balance, vanishing as one side dominates. exponent = inf is the max."""
    if math.isinf(exponent) or device_s <= 0 or host_s <= 0:
        return max(device_s, host_s)
    hi = max(device_s, host_s)
    return hi * ((device_s / hi) ** exponent + (host_s / hi) ** exponent) ** (1.0 / exponent)
