"""Shared builders for the serving tests: a roofline H100, Llama-3.1-8B, small traces."""

import numpy as np
import pytest

from simcluster.cost import cost_model_for
from simcluster.hardware.gpu import load_gpu
from simcluster.llm.spec import load_llm
from simcluster.serving.batching import Batching
from simcluster.serving.simulate import ReplicaGroup
from simcluster.workload import Trace


@pytest.fixture(scope="session")
def llm():
    return load_llm("llama-3.1-8b")


@pytest.fixture(scope="session")
def h100():
    return load_gpu("h100-sxm")


@pytest.fixture(scope="session")
def roofline(h100):
    return cost_model_for("h100-sxm", "roofline")


@pytest.fixture(scope="session")
def group(h100, roofline):
    def make(count=1, **kw):
        batching = kw.pop("batching", None) or Batching(**{k: kw.pop(k) for k in list(kw) if k in Batching.__dataclass_fields__})
        return ReplicaGroup(kw.pop("gpu", h100), kw.pop("cost", roofline), count, batching=batching, **kw)
    return make


def _poisson_trace(n, rate_per_s, prompt, output, seed=0, hash_ids=None):
    """n Poisson arrivals; prompt/output: an int (fixed) or an array of lengths."""
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate_per_s, n))
    prompt = np.full(n, prompt) if np.isscalar(prompt) else np.asarray(prompt)
    output = np.full(n, output) if np.isscalar(output) else np.asarray(output)
    return Trace("test", arrival, prompt, output, hash_ids=hash_ids)


@pytest.fixture(scope="session")
def poisson_trace():
    return _poisson_trace
