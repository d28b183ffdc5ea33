"""TrainingResult: one simulated training iteration as flat numbers, plus its Chrome trace; and the
model-FLOPs convention MFU is quoted in."""

from __future__ import annotations

from dataclasses import dataclass, field

from simcluster.llm import params
from simcluster.llm.spec import LlmSpec
from simcluster.training.memory import TrainingMemory


def model_flops_per_token(llm: LlmSpec, seq_len: int) -> float:
    """Training FLOPs per token: 6·N over the matmul weights a token touches (the LM head included,
    the embedding lookup not) + 12·L·(heads·head_dim)·s for attention scores and values
    (PaLM, Chowdhery et al. 2022, Appendix B; the convention MFU figures are quoted in)."""
    n = params.active_params(llm) - llm.vocab_size * llm.hidden_size
    if llm.tie_embeddings:
        n += llm.vocab_size * llm.hidden_size
    if llm.position_embedding == "learned":
        n -= llm.max_position * llm.hidden_size
    return 6.0 * n + 12.0 * llm.n_layers * llm.n_heads * llm.head_dim * seq_len


@dataclass
class TrainingResult:
    """One simulated iteration. Times in seconds on the critical GPU (the last to finish):
    time_s = compute_s + exposed_comm_s + bubble_s + optimizer_s."""

    time_s: float
    compute_s: float
    exposed_comm_s: float
    bubble_s: float
    optimizer_s: float
    mfu: float
    tokens_per_s: float
    model_flops: float
    memory: TrainingMemory
    devices: list[dict]
    trace_events: list[dict] = field(default_factory=list)

    @property
    def peak_memory_bytes(self) -> float:
        return self.memory.peak_memory_bytes

    @property
    def fits(self) -> bool:
        return self.memory.fits

    def breakdown(self) -> dict[str, float]:
        return {"compute_s": self.compute_s, "exposed_comm_s": self.exposed_comm_s,
                "bubble_s": self.bubble_s, "optimizer_s": self.optimizer_s}

    def summary(self) -> dict:
        return {"time_s": self.time_s, "mfu": self.mfu, "tokens_per_s": self.tokens_per_s,
                "model_flops": self.model_flops, "peak_memory_bytes": self.peak_memory_bytes,
                "fits": self.fits, "breakdown": self.breakdown(), "memory": self.memory.as_record()}

    def chrome_trace(self) -> dict:
        """Trace-event JSON (Chrome / Perfetto): pid = pipeline device, tid 0 compute, 1 sends, 2 DP."""
        meta = []
        for d in self.devices:
            pid = d["device"]
            meta.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"pp stage {pid}"}})
            for tid, name in ((0, "compute"), (1, "p2p"), (2, "data-parallel")):
                meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}})
        return {"traceEvents": meta + self.trace_events, "displayTimeUnit": "ms"}
