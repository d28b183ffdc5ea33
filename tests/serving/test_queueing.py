"""The serving simulator against queueing theory: M/D/1, M/M/1 and Little's law.

One replica with max_num_seqs = 1 and one-token outputs is a single FIFO server whose service
time is the prefill of one prompt. Fixed prompts with the roofline model give deterministic
service (M/D/1); a cost model whose only cost is the GEMM FLOPs of the body (linear in tokens)
with geometric prompt lengths gives (nearly continuous) exponential service (M/M/1).
"""

import numpy as np
import pytest

from simcluster.cost.model import CostModel, LaunchOverhead
from simcluster.serving.metrics import request_metrics
from simcluster.serving.simulate import simulate_serving
from simcluster.serving.step import StepTimer
from simcluster.workload import Trace


def one_server(group, **kw):
    return group(max_num_seqs=1, chunked_prefill=True, **kw)


def test_md1_mean_wait_matches_pollaczek_khinchine(llm, group, roofline):
    prompt, rho, n = 1024, 0.6, 80_000
    service_s = StepTimer(llm, roofline).time_s(1, prompt, prompt, prompt * (prompt + 1) / 2)
    rate = rho / service_s
    arrival = np.cumsum(np.random.default_rng(11).exponential(1 / rate, n))
    res = simulate_serving(llm, Trace("md1", arrival, np.full(n, prompt), np.ones(n, int)), [one_server(group)])
    m = request_metrics(res.requests)
    assert np.allclose(res.iterations["duration_s"], service_s, rtol=1e-12)      # deterministic service
    # Pollaczek-Khinchine for deterministic service: Wq = rho S / (2 (1 - rho)).
    wq = rho * service_s / (2 * (1 - rho))
    assert m["queue_s"].mean() == pytest.approx(wq, rel=0.04)
    assert (m["e2e_s"] - m["queue_s"]).to_numpy() == pytest.approx(service_s, rel=1e-9)
    assert res.summary()["gpu_time_utilisation"] == pytest.approx(rho, rel=0.02)


class GemmOnly:
    """Kernel timing where only the body GEMMs cost time: FLOPs / peak, so an iteration's time is
    proportional to its new tokens (attention, logits and elementwise ops are free)."""

    def __init__(self, flops_per_s):
        self.flops_per_s = flops_per_s

    def time_s(self, op):
        if op.kind == "gemm" and op.name != "lm_head":
            return op.flops / self.flops_per_s, "stub"
        return 0.0, "stub"


def test_mm1_mean_sojourn_is_one_over_mu_minus_lambda(llm, group, h100):
    cost = CostModel(h100, kernels=GemmOnly(1e15), launch=LaunchOverhead(0.0, 0.0))
    timer = StepTimer(llm, cost)
    per_token_s = timer.time_s(1, 1000, 1000, 0.0) / 1000
    mean_prompt, rho, n = 2000, 0.5, 60_000
    rng = np.random.default_rng(5)
    prompt = rng.geometric(1 / mean_prompt, n)          # geometric ≈ exponential at this mean
    mu = 1 / (per_token_s * mean_prompt)
    lam = rho * mu
    arrival = np.cumsum(rng.exponential(1 / lam, n))
    res = simulate_serving(llm, Trace("mm1", arrival, prompt, np.ones(n, int)), [one_server(group, cost=cost)])
    m = request_metrics(res.requests)
    service = (m["e2e_s"] - m["queue_s"]).to_numpy()
    assert service == pytest.approx(prompt * per_token_s, rel=1e-6)            # linear in tokens
    assert m["e2e_s"].mean() == pytest.approx(1 / (mu - lam), rel=0.04)
    # With the realised service moments, Pollaczek-Khinchine (M/G/1) holds tighter still.
    lam_hat = (n - 1) / (arrival[-1] - arrival[0])
    rho_hat = lam_hat * service.mean()
    w = service.mean() + lam_hat * (service**2).mean() / (2 * (1 - rho_hat))
    assert m["e2e_s"].mean() == pytest.approx(w, rel=0.03)


def test_littles_law_on_the_iteration_log(llm, group, poisson_trace):
    """Time-average number of running sequences (read off the iteration log) = throughput × mean time
    running (read off the request records): L = λW, exactly, for a run that drains."""
    rng = np.random.default_rng(8)
    trace = poisson_trace(3000, 25.0, rng.integers(50, 2000, 3000), rng.integers(1, 300, 3000), seed=8)
    res = simulate_serving(llm, trace, [group(count=1)])
    it, req = res.iterations, res.requests
    assert req["preemptions"].sum() == 0
    horizon = res.duration_s
    L = (it["n_running"] * it["duration_s"]).sum() / horizon
    lam = len(req) / horizon
    W = (req["finish_s"] - req["scheduled_s"]).mean()
    assert L == pytest.approx(lam * W, rel=1e-9)
    # And for the whole system (queue included), from the arrival/departure step function.
    times = np.concatenate([req["arrival_s"], req["finish_s"]])
    steps = np.concatenate([np.ones(len(req)), -np.ones(len(req))])
    order = np.argsort(times, kind="stable")
    n_in = np.cumsum(steps[order])
    area = (n_in[:-1] * np.diff(times[order])).sum()
    assert area / horizon == pytest.approx(lam * (req["finish_s"] - req["arrival_s"]).mean(), rel=1e-9)
    assert L < area / horizon
