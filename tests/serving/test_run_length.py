"""A horizon past the end of the work must not dilute throughput: the run ends with its last event."""

import pytest

from simcluster.cost import cost_model_for
from simcluster.hardware import load_gpu
from simcluster.llm import load_llm
from simcluster.serving.simulate import ReplicaGroup, simulate_serving
from simcluster.workload import generate


def test_horizon_after_the_work_does_not_change_throughput():
    llm = load_llm("llama-3.2-1b")
    trace = generate({"arrival": "poisson", "rate_per_s": 5, "n_requests": 60,
                      "prompt_tokens": {"dist": "fixed", "value": 200},
                      "output_tokens": {"dist": "fixed", "value": 20}}, seed=2)
    group = ReplicaGroup(load_gpu("h100-sxm"), cost_model_for("h100-sxm", "roofline"))
    free = simulate_serving(llm, trace, [group])
    capped = simulate_serving(llm, trace, [group], until_s=free.duration_s + 1000.0)
    assert capped.unfinished == 0
    assert capped.duration_s == pytest.approx(free.duration_s)
    assert capped.summary()["request_throughput_per_s"] == pytest.approx(free.summary()["request_throughput_per_s"])
    cut = simulate_serving(llm, trace, [group], until_s=trace.arrival_s[30])
    assert cut.unfinished > 0 and cut.duration_s == pytest.approx(trace.arrival_s[30])
