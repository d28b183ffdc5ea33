"""Pipeline schedules: the order in which each pipeline device runs its forward (F) and backward
(B; W = weight-gradient pass when split) passes over micro-batches and model chunks.

An action is (pass, micro_batch, chunk) where chunk is the global virtual-stage index
j = c·pp + device for the device's c-th model chunk. A schedule is a function
(pp, micro_batches, virtual_stages, device) -> list of actions, listed in SCHEDULES.
Theory (Narayanan et al. 2021 §2.2): with equal stage times and free communication, GPipe and
1F1B idle a fraction (p-1)/(m+p-1) of the iteration; interleaving v chunks per device divides the
bubble time by v.
"""

from __future__ import annotations

from typing import Callable

Action = tuple[str, int, int]


def gpipe(p: int, m: int, v: int, device: int) -> list[Action]:
    """All forwards, then all backwards (Huang et al. 2019, GPipe)."""
    return [("F", i, device) for i in range(m)] + [("B", i, device) for i in range(m)]


def one_f_one_b(p: int, m: int, v: int, device: int) -> list[Action]:
    """PipeDream-Flush 1F1B (Narayanan et al. 2021 §2.2.1): p-device-1 warm-up forwards, then one
    forward and one backward alternately, then the remaining backwards."""
    warm = min(p - device - 1, m)
    acts: list[Action] = [("F", i, device) for i in range(warm)]
    for i in range(m - warm):
        acts += [("F", warm + i, device), ("B", i, device)]
    acts += [("B", i, device) for i in range(m - warm, m)]
    return acts


def interleaved(p: int, m: int, v: int, device: int) -> list[Action]:
    """Interleaved 1F1B (Narayanan et al. 2021 §2.2.2, Megatron-LM's order): micro-batches in groups
    of p run through chunk 0, then chunk 1, ...; backwards walk the chunks in reverse.
    Needs m divisible by p."""
    total = m * v

    def fwd(k: int) -> Action:
        return ("F", (k // (p * v)) * p + k % p, ((k // p) % v) * p + device)

    def bwd(k: int) -> Action:
        return ("B", (k // (p * v)) * p + k % p, (v - 1 - (k // p) % v) * p + device)

    warm = min((p - device - 1) * 2 + (v - 1) * p, total)
    acts = [fwd(k) for k in range(warm)]
    for i in range(total - warm):
        acts += [fwd(warm + i), bwd(i)]
    acts += [bwd(k) for k in range(total - warm, total)]
    return acts


def zero_bubble(p: int, m: int, v: int, device: int) -> list[Action]:
    """ZB-H1 (Qi et al. 2023, "Zero Bubble Pipeline Parallelism" §3.1): the 1F1B order of F and B
    (input gradient only), each weight-gradient pass W deferred: device i runs W of micro-batch k
    after B of micro-batch k + i, the last i of them at the end, where they fill the cool-down
    bubble. Bubble (p-1)(F + B - W) instead of 1F1B's (p-1)(F + B + W), same activation memory."""
    out: list[Action] = []
    for act in one_f_one_b(p, m, v, device):
        out.append(act)
        if act[0] == "B" and act[1] - device >= 0:
            out.append(("W", act[1] - device, device))
    out += [("W", k, device) for k in range(max(0, m - device), m)]
    return out


SCHEDULES: dict[str, Callable[[int, int, int, int], list[Action]]] = {
    "gpipe": gpipe,
    "1f1b": one_f_one_b,
    "interleaved": interleaved,
    "zero_bubble": zero_bubble,
}


def bubble_fraction(p: int, m: int, v: int = 1) -> float:
    """Idle fraction of an iteration with equal stage times and free communication:
    (p-1)/v / (m + (p-1)/v) (Narayanan et al. 2021, §2.2.1-2.2.2)."""
    b = (p - 1) / v
    return b / (m + b)
