"""Event-level replay of one training iteration on SimPy.

One representative data-parallel replica is simulated: every DP replica runs the same pipeline at
the same time, so their gradient collectives are costed by the topology-aware group model
(placement.py) instead of being simulated rank by rank. Events are per pipeline device per
micro-batch pass (F, B, W) and per collective, never per layer (DESIGN.md principle 1).

Overlap as frameworks do it:
- TP all-reduces and EP all-to-alls sit inside each pass (blocking, counted as exposed comm);
- CP ring exchanges overlap the blockwise attention, only the excess is exposed;
- ZeRO-3/FSDP gathers the next layer while computing this one (ops.prefetch_pipeline_s);
- DDP / ZeRO-1/2 gradient buckets (25 MB) launch as the last micro-batch's backward produces
  them and run on the device's link while backward continues; the optimizer waits for them.
- P2P activation sends and DP buckets share each device's outgoing link (links.SharedLink).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import simpy

from simcluster.cost.model import CostModel
from simcluster.hardware.node import NodeSpec
from simcluster.llm.spec import LlmSpec
from simcluster.training.links import SharedLink
from simcluster.training.memory import training_memory
from simcluster.training.overheads import FrameworkOverheads
from simcluster.training.ops import ChunkCost, chunk_cost, optimizer_op, streaming_op
from simcluster.training.placement import Groups, collective_s, p2p_s, plan_groups, topology_links
from simcluster.training.plan import TrainingPlan, validate_plan
from simcluster.training.result import TrainingResult, model_flops_per_token
from simcluster.training.schedule import SCHEDULES
from simcluster.units import dtype_bytes


@dataclass
class _Device:
    index: int
    actions: list
    compute_s: float = 0.0
    inline_comm_s: float = 0.0
    ops_end_s: float = 0.0
    grads_done_s: float = 0.0
    end_s: float = 0.0
    finished: bool = False
    next: int = 0


class _Replay:
    """The SimPy model of one pipeline replica."""

    def __init__(self, plan, cm, groups: Groups, chunks: list[ChunkCost], record: bool,
                 link_model: str = "fluid"):
        self.link_model = link_model
        self.plan, self.cm, self.groups, self.chunks = plan, cm, groups, chunks
        self.env = simpy.Environment()
        self.record = record
        self.events: list[dict] = []
        p, m, v = plan.pp, plan.n_micro_batches, plan.virtual_stages
        self.split_w = plan.schedule == "zero_bubble"
        self.n_chunks = p * v
        self.devices = [_Device(s, SCHEDULES[plan.schedule](p, m, v, s)) for s in range(p)]
        self.links = [{"nvlink": SharedLink(self.env, f"nvlink{s}"), "nic": SharedLink(self.env, f"nic{s}")}
                      for s in range(p)]
        self.arrivals: dict[tuple, simpy.Event] = {}
        self.waiting: dict[tuple, _Device] = {}
        self.last_mb = m - 1
        self.grad_ready: list[list] = [[] for _ in range(p)]   # (ready_s, work_s, link name, label)
        self.pp = p
        self.dp_busy: list[list] = [[] for _ in range(p)]
        self.busy: list[list] | None = None      # compute intervals, kept only when asked (interference)
        self.fluid = link_model == "fluid"
        # The link each device uses to send to a neighbour, by the sending chunk (precomputed: hot path).
        self.send_link = [[self.links[s]["nic" if groups.pp_crosses_node(j % p) else "nvlink"]
                           for j in range(self.n_chunks)] for s in range(p)]
        self.durations = {k: [self._durations(k, c) for c in range(self.n_chunks)] for k in "FBW"}
        self.send_work = [p2p_s(c.send_bytes, groups.pp_crosses_node(c.index % p) if p > 1 else False, cm.links)
                          for c in chunks]

    def _arrival(self, key) -> simpy.Event:
        ev = self.arrivals.get(key)
        if ev is None:
            ev = self.arrivals[key] = self.env.event()
        return ev

    def _trace(self, pid, tid, name, start, dur, **args):
        if self.record and dur > 0:
            self.events.append({"name": name, "ph": "X", "pid": pid, "tid": tid, "ts": start * 1e6,
                                "dur": dur * 1e6, "args": args})

    def _send(self, dev: int, to_chunk: int, kind: str, mb: int, work_s: float):
        """Deliver an activation ('a') or gradient ('g') for chunk `to_chunk` from device `dev`.

        A send shares the device's outgoing link with gradient buckets in flight (processor
        sharing); while no bucket is active, sends on one link go first come, first served
        (one timer event per send keeps a 1T-parameter iteration under two seconds).
        """
        key = (kind, mb, to_chunk)
        env = self.env
        now = env.now
        if work_s <= 0 or to_chunk % self.pp == dev:
            self._deliver(key, env.timeout(0.0))
            return
        link = self.send_link[dev][to_chunk - 1 if kind == "a" else to_chunk]
        if self.fluid and link.active:
            name = f"{'act' if kind == 'a' else 'grad'} mb{mb}->c{to_chunk}"
            done = link.transfer(work_s, name)
            if self.record:
                done.callbacks.append(lambda _: self._trace(dev, 1, name, now, env.now - now))
            self._deliver(key, done)
            return
        start = now if now > link.fifo_free_s else link.fifo_free_s
        link.fifo_free_s = start + work_s
        if self.record:
            self._trace(dev, 1, f"{'act' if kind == 'a' else 'grad'} mb{mb}->c{to_chunk}", start, work_s)
        self._deliver(key, env.timeout(start + work_s - now))

    def _deliver(self, key, event: simpy.Event):
        self.arrivals[key] = event
        waiter = self.waiting.pop(key, None)
        if waiter is not None:
            event.callbacks.append(lambda _: self._advance(waiter))

    def _buckets(self, dev: _Device, chunk: ChunkCost, start_s: float, dur_s: float):
        """Queue the gradient buckets of `chunk`, ready progressively over its last backward; the
        buckets of chunk.late_grad_params (the embedding) only when that backward ends."""
        plan, g = self.plan, self.groups
        if plan.zero == 3:
            return
        coll = "all_reduce" if plan.zero == 0 else "reduce_scatter"
        gb = dtype_bytes(plan.grad_dtype)
        for n_params, late, grp in ((chunk.dense_params, chunk.late_grad_params, g.dp),
                                    (chunk.expert_params, 0.0, g.expert_dp)):
            total = n_params * gb
            if grp.size <= 1 or total <= 0:
                continue
            n = max(1, math.ceil(total / plan.bucket_bytes))
            size = total / n
            work = collective_s(coll, size, grp, self.cm)
            label = f"{coll} {grp.name} c{chunk.index}"
            progressive = total - late * gb
            # Bucket k holds bytes up to (k + 1)·size, produced at a steady rate over the pass.
            ready = [start_s + dur_s * (min(1.0, (k + 1) * size / progressive) if progressive > 0 else 1.0)
                     for k in range(n)]
            if self.link_model == "fifo":
                # The device's NCCL stream serves buckets in order; no SimPy event per bucket.
                for k in range(n):
                    start = max(ready[k], dev.grads_done_s)
                    dev.grads_done_s = start + work
                    self.dp_busy[dev.index].append((start, start + work))
                    self._trace(dev.index, 2, label, start, work)
                continue
            for k in range(n):
                self.grad_ready[dev.index].append((ready[k], work, grp.link, label))
        self._notify(dev.index)

    def _notify(self, s: int):
        if not self._wake[s].triggered:
            self._wake[s].succeed()

    def _grad_sync(self, dev: _Device):
        """The device's NCCL stream: buckets reduce one after another as they become ready."""
        s = dev.index
        i = 0
        while True:
            queue = self.grad_ready[s]
            if i < len(queue):
                ready_s, work, link, label = queue[i]
                if ready_s > self.env.now:
                    yield self.env.timeout(ready_s - self.env.now)
                # Buckets that became ready while the stream was busy go out back to back: one
                # transfer of their summed solo time (alpha-beta is additive) instead of one each.
                j, n = i + 1, 1
                while j < len(queue) and queue[j][0] <= self.env.now and queue[j][2] == link:
                    work += queue[j][1]
                    j, n = j + 1, n + 1
                i = j
                start = self.env.now
                yield self.links[s][link].transfer(work, label)
                self.dp_busy[s].append((start, self.env.now))
                self._trace(s, 2, label if n == 1 else f"{label} ×{n}", start, self.env.now - start)
                continue
            if dev.finished:
                break
            yield self._wake[s]
            self._wake[s] = self.env.event()
        dev.grads_done_s = max(dev.grads_done_s, self.env.now)

    def _durations(self, kind: str, c: int) -> tuple[float, float]:
        chunk = self.chunks[c]
        if kind == "F":
            return chunk.forward_s, chunk.forward_comm_s
        if kind == "W":
            return chunk.backward_weight_s, 0.0
        return chunk.backward_input_s + (0.0 if self.split_w else chunk.backward_weight_s), chunk.backward_comm_s

    def _start(self, dev: _Device, kind: str, mb: int, c: int):
        comp, comm = self.durations[kind][c]
        start = self.env.now
        if mb == self.last_mb and (kind == "W" or (kind == "B" and not self.split_w)):
            self._buckets(dev, self.chunks[c], start, comp + comm)
        dev.compute_s += comp
        dev.inline_comm_s += comm
        self.env.timeout(comp + comm).callbacks.append(lambda _: self._finish(dev, kind, mb, c, start))

    def _finish(self, dev: _Device, kind: str, mb: int, c: int, start: float):
        if self.busy is not None:
            self.busy[dev.index].append((start, self.env.now, self.chunks[c].device_fraction))
        if self.record:
            self._trace(dev.index, 0, f"{kind}{mb} c{c}", start, self.env.now - start, micro_batch=mb, chunk=c)
        if kind == "F" and c + 1 < self.n_chunks:
            self._send(dev.index, c + 1, "a", mb, self.send_work[c])
        elif kind == "B":
            if c > 0:
                self._send(dev.index, c - 1, "g", mb, self.send_work[c - 1])
        self._advance(dev)

    def _advance(self, dev: _Device):
        """Start the device's next pass, or wait for its input. Devices are callback-driven state
        machines rather than processes: a pass costs one SimPy event."""
        if dev.next < len(dev.actions):
            kind, mb, c = dev.actions[dev.next]
            key = None
            if kind == "F" and c > 0:
                key = ("a", mb, c)
            elif kind == "B" and c < self.n_chunks - 1:
                key = ("g", mb, c)
            if key is not None:
                dep = self.arrivals.get(key)
                ready = dep is not None and dep.callbacks is None   # processed: arrived by now
                if not ready:
                    if dep is None:
                        self.waiting[key] = dev
                    else:
                        dep.callbacks.append(lambda _: self._advance(dev))
                    return
                del self.arrivals[key]
            dev.next += 1
            self._start(dev, kind, mb, c)
            return
        dev.ops_end_s = self.env.now
        dev.finished = True
        self._notify(dev.index)

    def run(self) -> float:
        self._wake = [self.env.event() for _ in self.devices]
        for d in self.devices:
            self._advance(d)
            if self.link_model == "fluid":
                self.env.process(self._grad_sync(d))
        self.env.run()
        return max(max(d.ops_end_s, d.grads_done_s) for d in self.devices)


def _optimizer_s(plan: TrainingPlan, cm: CostModel, groups: Groups, chunks: list[ChunkCost], dev: int,
                 optimizer_impl: str) -> tuple[float, float]:
    """(Adam step seconds, exposed ZeRO-1/2 weight all-gather seconds) on pipeline device `dev`."""
    mine = [c for c in chunks if c.index % plan.pp == dev]
    dense = sum(c.dense_params for c in mine)
    expert = sum(c.expert_params for c in mine)
    shard_d = groups.dp.size if plan.zero >= 1 else 1
    shard_e = groups.expert_dp.size if plan.zero >= 1 else 1
    local = dense / shard_d + expert / shard_e
    op = optimizer_op(plan, local, optimizer_impl)
    if optimizer_impl == "foreach" and not cm.measures(op.shape["kernel"]):
        # torch's foreach AdamW makes ~8 elementwise passes (decay, lerp, mul, addcmul, sqrt, div,
        # add, addcdiv) instead of one fused pass: ~80 bytes per fp32 parameter instead of 28.
        op = streaming_op(op.name, op.bytes * 80.0 / 28.0, op.flops)
    step_s = cm.op(op, cuda_graphs=False).time_s if local > 0 else 0.0
    gather_s = 0.0
    if plan.zero in (1, 2):
        pb = dtype_bytes(plan.param_dtype)
        gather_s = (collective_s("all_gather", dense * pb, groups.dp, cm)
                    + collective_s("all_gather", expert * pb, groups.expert_dp, cm))
    return step_s, gather_s


def overlap_s(a: list[tuple[float, float, float]], b: list[tuple[float, float]]) -> float:
    """Time sorted disjoint intervals a (start, end, weight) overlap sorted disjoint intervals b,
    each overlap weighted by its a-interval's weight (two-pointer sweep)."""
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if hi > lo:
            total += (hi - lo) * a[i][2]
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def host_issue_s(actions: list, chunks: list[ChunkCost]) -> float:
    """Host seconds to issue every pass of one device's schedule (sum over its F/B/W actions)."""
    return sum(chunks[c].forward_host_s if kind == "F" else chunks[c].backward_host_s if kind == "B" else 0.0
               for kind, _, c in actions)


def replay_iteration(plan: TrainingPlan, chunks: list[ChunkCost], cm: CostModel, groups: Groups,
                     record_trace: bool = False, link_model: str = "fluid", optimizer_impl: str = "fused",
                     step_overhead_s: float = 0.0, overlap_slowdown: float = 0.0,
                     host_step_s: float = 0.0) -> tuple[list[dict], list[dict]]:
    """Replay one iteration of a pipeline whose chunk costs are given; (per-device rows, trace events).

    Rows carry compute_s, inline_comm_s, ops_end_s (last pass), grads_done_s (last gradient
    bucket), optimizer_s, param_gather_s, host_wait_s and end_s. Theory tests feed equal chunk costs
    here. overlap_slowdown κ: the iteration of a device stretches by κ × (time its passes kept the GPU
    busy while its gradient collectives ran), counted as exposed communication (first-order
    interference model).
    host_step_s: eager host work once per step after the last pass is issued (loss bookkeeping,
    hooks, optimizer dispatch). Without pipeline parallelism nothing in the step waits on the device,
    so the host issues ahead of the GPU (CUDA's stream runs behind the launch queue): that work
    overlaps the GPU's remaining backward and gradient reduction, and the optimizer kernels start at
    max(gradients reduced, host done issuing). A pipeline stage's host waits for its inputs, so there
    it runs after the stage's last pass. step_overhead_s is always serial.
    """
    if link_model not in ("fluid", "fifo"):
        raise ValueError(f"link_model: expected 'fluid' or 'fifo', got {link_model!r}")
    replay = _Replay(plan, cm, groups, chunks, record_trace, link_model)
    if overlap_slowdown > 0:
        replay.busy = [[] for _ in replay.devices]
    replay.run()
    devices = []
    for d in replay.devices:
        step_s, gather_s = _optimizer_s(plan, cm, groups, chunks, d.index, optimizer_impl)
        interference = overlap_slowdown * overlap_s(replay.busy[d.index], replay.dp_busy[d.index]) \
            if overlap_slowdown > 0 else 0.0
        grads_end = max(d.ops_end_s, d.grads_done_s) + interference
        d.inline_comm_s += interference
        host_done = (host_issue_s(d.actions, chunks) if plan.pp == 1 else d.ops_end_s) + host_step_s
        ready = max(grads_end, host_done)
        d.end_s = ready + step_s + gather_s + step_overhead_s
        replay._trace(d.index, 0, "optimizer", ready, step_s)
        replay._trace(d.index, 2, "zero all_gather", ready + step_s, gather_s)
        devices.append({"device": d.index, "compute_s": d.compute_s, "inline_comm_s": d.inline_comm_s,
                        "ops_end_s": d.ops_end_s, "grads_done_s": d.grads_done_s, "optimizer_s": step_s,
                        "param_gather_s": gather_s, "host_wait_s": ready - grads_end, "end_s": d.end_s})
    return devices, replay.events


def breakdown_of(devices: list[dict], step_overhead_s: float = 0.0) -> dict[str, float]:
    """time_s and its split on the critical device (the last to finish; most compute on ties):
    exposed comm = blocking comm inside passes + waiting for gradients after the last pass +
    ZeRO weight gathers; bubble = the rest of the idle time."""
    time_s = max(d["end_s"] for d in devices)
    crit = max(devices, key=lambda d: (d["end_s"], d["compute_s"]))
    exposed = crit["inline_comm_s"] + (max(crit["ops_end_s"], crit["grads_done_s"]) - crit["ops_end_s"]) \
        + crit["param_gather_s"]
    optimizer = crit["optimizer_s"] + step_overhead_s + crit.get("host_wait_s", 0.0)
    bubble = max(0.0, time_s - crit["compute_s"] - exposed - optimizer)
    return {"time_s": time_s, "compute_s": crit["compute_s"], "exposed_comm_s": exposed,
            "bubble_s": bubble, "optimizer_s": optimizer}


def host_bound(c: ChunkCost, overheads: FrameworkOverheads) -> ChunkCost:
    """A chunk whose passes last as long as issuing their kernels from the host and running them
    allow together (FrameworkOverheads.pass_time_s); the blocking communication inside a pass is
    device work like its kernels. The compute share of each pass stretches to make up the time."""
    hf, hb = overheads.forward_host_s(c.n_layers), overheads.backward_host_s(c.n_layers)
    f_dev = c.forward_s + c.forward_comm_s
    f = max(c.forward_s, overheads.pass_time_s(f_dev, hf) - c.forward_comm_s)
    b = c.backward_input_s + c.backward_weight_s
    b_new = max(b, overheads.pass_time_s(b + c.backward_comm_s, hb) - c.backward_comm_s)
    k = b_new / b if b > 0 else 1.0
    busy = (c.forward_s + b) / (f + b * k) if f + b * k > 0 else 1.0
    return replace(c, forward_s=f, backward_input_s=c.backward_input_s * k, backward_weight_s=c.backward_weight_s * k,
                   device_fraction=busy, forward_host_s=hf, backward_host_s=hb)


def plan_chunks(llm: LlmSpec, plan: TrainingPlan, cm: CostModel, groups: Groups,
                overheads: FrameworkOverheads | None = None, memo: dict | None = None) -> list[ChunkCost]:
    """ChunkCost of every virtual stage (identical chunks computed once). memo: a dict the caller
    keeps to reuse chunk costs across calls with the same LLM, plan and cost model (fits)."""
    n_chunks = plan.pp * plan.virtual_stages
    memo = {} if memo is None else memo
    chunks = []
    for j in range(n_chunks):
        layers = range(j * llm.n_layers // n_chunks, (j + 1) * llm.n_layers // n_chunks)
        key = (llm, plan, j == 0, j == n_chunks - 1, tuple(llm.is_moe_layer(i) for i in layers))
        if key not in memo:
            memo[key] = chunk_cost(llm, plan, cm, groups, j, n_chunks)
        c = memo[key] if overheads is None else host_bound(memo[key], overheads)
        chunks.append(replace(c, index=j))
    return chunks


def simulate_training(llm: LlmSpec, plan: TrainingPlan, cm: CostModel, node: NodeSpec | None = None,
                      record_trace: bool = False, optimizer_impl: str = "fused",
                      persistent_grads: bool = True, step_overhead_s: float = 0.0,
                      link_model: str = "fluid", overheads: FrameworkOverheads | None = None,
                      memo: dict | None = None, topology=None, keep_pipeline_outputs: bool = False) -> TrainingResult:
    """Simulate one iteration of `plan` training `llm`; PlanError if the plan is inconsistent.

    cm: the GPU's CostModel (its links give NVLink and NIC figures); node: used only for GPUs per
    node (defaults to cm.links.gpus_per_node). step_overhead_s: fixed host time per iteration.
    link_model: 'fluid' — sends and gradient buckets on one device link share its bandwidth
    (processor sharing, links.SharedLink); 'fifo' — each traffic class (pipeline sends, the DP
    stream) is served in order on its own, with no SimPy event per bucket (faster, for huge runs).
    optimizer_impl: 'fused' (one pass) or 'foreach' (torch AdamW default, ~8 passes, one temporary).
    overheads: eager-framework host time and memory reserve (overheads.py); None = none.
    memo: optional dict reused across calls to skip re-costing identical chunks (see plan_chunks).
    keep_pipeline_outputs: the last stage keeps all micro-batch outputs (memory.stage_memory).
    topology: a cluster graph (hardware.topology.build_cluster, possibly with measured per-pair
    bandwidths from set_link_bandwidth): the links are rescaled by its figures (placement.
    topology_links) and collectives use the alpha-beta model on them instead of measured curves.

    >>> from simcluster.cost import cost_model_for
    >>> from simcluster.llm.spec import load_llm
    >>> plan = TrainingPlan(gpu="h100-sxm", n_gpus=8, dp=8, micro_batch=1, seq_len=4096, zero=1)
    >>> r = simulate_training(load_llm("llama-3.1-8b"), plan, cost_model_for("h100-sxm", "roofline"))
    >>> 0.2 < r.mfu < 0.8
    True
    """
    gpn = node.gpus_per_node if node is not None else cm.links.gpus_per_node
    validate_plan(plan, llm, gpn)
    if topology is not None:
        cm = CostModel(cm.gpu, topology_links(topology, cm.links, plan.n_gpus), cm.kernels, cm.launch)
    groups = plan_groups(plan, gpn)
    chunks = plan_chunks(llm, plan, cm, groups, overheads, memo)
    devices, events = replay_iteration(plan, chunks, cm, groups, record_trace, link_model, optimizer_impl,
                                       step_overhead_s, overheads.overlap_slowdown if overheads else 0.0,
                                       overheads.host_s_per_step if overheads else 0.0)
    b = breakdown_of(devices, step_overhead_s)
    tokens = plan.tokens_per_iteration
    flops = model_flops_per_token(llm, plan.seq_len) * tokens
    peak = cm.gpu.flops_per_s("bf16") * plan.n_gpus
    memory = training_memory(llm, plan, cm.gpu.memory_bytes, optimizer_impl, persistent_grads,
                             overheads.memory_reserve_bytes if overheads else 0.0, keep_pipeline_outputs)
    return TrainingResult(b["time_s"], b["compute_s"], b["exposed_comm_s"], b["bubble_s"], b["optimizer_s"],
                          flops / (b["time_s"] * peak), tokens / b["time_s"], flops, memory, devices, events)
