"""simcluster simulate SCENARIO: run the deployment the scenario describes over its workload."""

from __future__ import annotations

import json

from simcluster.commands.inputs import scenario_llm, scenario_trace
from simcluster.cost import cost_model_for
from simcluster.hardware.gpu import load_gpu
from simcluster.scenario import Scenario, ScenarioError, load_scenario
from simcluster.serving.replica import Batching
from simcluster.serving.simulate import ReplicaGroup, ServingResult, simulate_serving


def replica_groups(scenario: Scenario) -> list[ReplicaGroup]:
    groups = []
    for r in scenario.serving.replicas:
        groups.append(ReplicaGroup(
            gpu=load_gpu(r.gpu), cost=cost_model_for(r.gpu, scenario.cost_model), count=r.count,
            tp=r.tp, pp=r.pp, ep=r.ep,
            batching=Batching(r.max_num_seqs, r.max_batched_tokens, r.chunked_prefill, r.order, r.preemption,
                              r.block_size, r.watermark, r.prefix_caching, r.async_scheduling),
            dtype=r.dtype, kv_dtype=r.kv_dtype, gpu_memory_utilization=r.gpu_memory_utilization,
            cuda_graphs=r.cuda_graphs, cpu_overhead_s=r.cpu_overhead_s, role=r.role,
            swap_space_bytes=r.swap_space_bytes,
            host_to_device_bandwidth_bytes_per_s=r.host_to_device_bandwidth_bytes_per_s,
            moe_imbalance=r.moe_imbalance, attention_packing=r.attention_packing,
            graph_padding_tokens=tuple(r.graph_padding_tokens), graph_capture_s=r.graph_capture_s,
            graph_io_sets=r.graph_io_sets))
    return groups


def run_scenario(scenario: Scenario, source: str = "<scenario>") -> ServingResult:
    if scenario.serving is None:
        raise ScenarioError(f"{source}: serving: required by 'simulate' (the deployment to simulate)")
    llm = scenario_llm(scenario)
    trace = scenario_trace(scenario)
    return simulate_serving(llm, trace, replica_groups(scenario), scenario.serving.router)


def simulate(args) -> int:
    scenario = load_scenario(args.scenario, args.overrides)
    if scenario.kind == "training":
        from simcluster.commands.train_step import simulate_training_scenario
        return simulate_training_scenario(scenario, args)
    result = run_scenario(scenario, args.scenario)
    slo = scenario.slo.model_dump()
    summary = {"scenario": scenario.name, **result.summary(slo)}
    if args.out:
        from simcluster.report.chrome_trace import iteration_events
        from simcluster.report.output import write_results
        from simcluster.serving.records import kv_use_series, request_table
        name, table = request_table(result.requests)
        write_results(args.out, {"summary.json": summary, name: table,
                                 "iterations.csv": result.iterations,
                                 "kv_use.csv": kv_use_series(result.iterations, max(result.duration_s / 500, 1e-3)),
                                 "trace.json": iteration_events(result.iterations)})
        from simcluster.report.html import write_simulation_report
        write_simulation_report(args.out, summary, result, scenario)
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    else:
        from simcluster.report.tables import print_summary
        print_summary(summary, title=f"{scenario.name}: {len(result.requests)} requests")
    return 0
