"""simcluster: a discrete-event cluster simulator and configuration optimizer for LLMs.

The public Python API (names load lazily, so `import simcluster` stays fast):

>>> import simcluster
>>> spec = simcluster.load_llm("llama-3.1-8b")
>>> est = simcluster.estimate_step("h100-sxm", "llama-3.1-8b", decode=[(64, 1024)])
>>> est["time_s"] > 0
True
"""

from __future__ import annotations

from importlib import import_module

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "load_scenario": "simcluster.scenario",
    "Scenario": "simcluster.scenario",
    "ScenarioError": "simcluster.scenario",
    "load_gpu": "simcluster.hardware.gpu",
    "load_node": "simcluster.hardware.node",
    "build_cluster": "simcluster.hardware.topology",
    "load_llm": "simcluster.llm.spec",
    "forward_ops": "simcluster.llm.ops",
    "Batch": "simcluster.llm.ops",
    "serving_memory": "simcluster.llm.memory",
    "CostModel": "simcluster.cost.model",
    "cost_model_for": "simcluster.cost",
    "read_trace": "simcluster.workload",
    "generate": "simcluster.workload",
    "Trace": "simcluster.workload",
    "simulate_serving": "simcluster.serving.simulate",
    "ReplicaGroup": "simcluster.serving.simulate",
    "Batching": "simcluster.serving.replica",
    "simulate_training": "simcluster.training.simulate",
    "training_memory": "simcluster.training.memory",
    "TrainingPlan": "simcluster.training.plan",
    "search_serving_plans": "simcluster.optimize.serving_search",
    "search_training_plans": "simcluster.optimize.training_search",
    "place_experts": "simcluster.optimize.placement",
    "eplb": "simcluster.optimize.eplb",
    "solve_gpu_mix": "simcluster.optimize.gpu_mix",
    "estimate_step": "simcluster.commands.estimate",
    "estimate_train_step": "simcluster.commands.train_step",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'simcluster' has no attribute {name!r}")


def __dir__():
    return __all__
