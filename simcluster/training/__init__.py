"""The training simulator: parallel plans, memory, pipeline schedules, event-level replay, trace replay."""

from simcluster.training.memory import TrainingMemory, activation_bytes_per_layer, training_memory
from simcluster.training.plan import PlanError, TrainingPlan, validate_plan
from simcluster.training.result import TrainingResult, model_flops_per_token
from simcluster.training.simulate import simulate_training

__all__ = ["PlanError", "TrainingMemory", "TrainingPlan", "TrainingResult", "activation_bytes_per_layer",
           "model_flops_per_token", "simulate_training", "training_memory", "validate_plan"]
