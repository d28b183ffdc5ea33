"""Turning a validated scenario into the objects the simulators take (LLM spec, trace)."""

from __future__ import annotations

from pathlib import Path

from simcluster.llm.spec import LlmSpec, load_llm
from simcluster.scenario import Scenario
from simcluster.workload import Trace, generate, read_trace


def scenario_llm(scenario: Scenario) -> LlmSpec:
    name = scenario.llm
    if name.endswith(".json") and not Path(name).is_absolute():
        name = str(Path(scenario.base_dir) / name)
    return load_llm(name)


def scenario_trace(scenario: Scenario) -> Trace:
    """The scenario's workload: a trace file (relative to the scenario file) or a synthetic one."""
    w = scenario.workload
    if w.synthetic is not None:
        spec = w.synthetic.model_dump()
        spec["name"] = f"{scenario.name}-{spec['arrival']}"
        return generate(spec, seed=scenario.seed, base_dir=scenario.base_dir)
    t = w.trace
    path = Path(t.path)
    if not path.is_absolute():
        path = Path(scenario.base_dir) / path
    options = {"columns": t.columns} if t.columns else {}
    trace = read_trace(path, t.format, **options)
    if t.max_requests:
        trace = trace.head(t.max_requests)
    if t.rate_per_s:
        trace = trace.rescale_rate(t.rate_per_s)
    return trace
