"""Search over plans and the integer programs (GPU mix, expert placement)."""

from simcluster.optimize.eplb import eplb
from simcluster.optimize.expert_loads import generate_loads, read_loads_csv
from simcluster.optimize.placement import PlacementResult, place_experts
from simcluster.optimize.gpu_mix import MixResult, solve_gpu_mix

__all__ = ["MixResult", "PlacementResult", "eplb", "generate_loads", "place_experts", "read_loads_csv",
           "solve_gpu_mix"]
