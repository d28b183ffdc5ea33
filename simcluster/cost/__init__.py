"""Cost models: kernels (roofline, calibrated), links and collectives, behind CostModel."""

from simcluster.cost.collectives import LinkParams, collective_time_s
from simcluster.cost.model import CostModel, IterationEstimate, LaunchOverhead, OpEstimate
from simcluster.cost.roofline import RooflineKernels

__all__ = ["CostModel", "IterationEstimate", "LaunchOverhead", "LinkParams", "OpEstimate",
           "RooflineKernels", "collective_time_s"]


def cost_model_for(gpu_name: str, method: str = "calibrated", node=None) -> CostModel:
    """The CostModel for a catalog GPU in its default node (or `node`).

    method 'calibrated' uses measured tables where profiles/measured holds them and falls back
    per op (see cost/calibrated.py); 'roofline' uses datasheet peaks × default efficiencies.
    """
    from simcluster.hardware.gpu import load_gpu
    from simcluster.hardware.node import default_node_for

    gpu = load_gpu(gpu_name)
    node = node or default_node_for(gpu_name)
    links = LinkParams.from_node(node)
    if method == "roofline":
        return CostModel(gpu, links)
    if method != "calibrated":
        raise ValueError(f"unknown cost model {method!r}; expected 'calibrated' or 'roofline'")
    try:
        from simcluster.cost.calibrated import calibrated_cost_model
    except ImportError:
        return CostModel(gpu, links)
    return calibrated_cost_model(gpu, node, links)
