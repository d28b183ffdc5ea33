"""Cost models: kernels (roofline, calibrated), links and collectives, behind CostModel."""

from simcluster.cost.collectives import LinkParams, collective_time_s
from simcluster.cost.model import CostModel, IterationEstimate, LaunchOverhead, OpEstimate
from simcluster.cost.roofline import RooflineKernels

__all__ = ["CostModel", "IterationEstimate", "LaunchOverhead", "LinkParams", "OpEstimate",
           "RooflineKernels", "collective_time_s"]
