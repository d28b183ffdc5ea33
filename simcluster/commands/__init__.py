"""One module per CLI subcommand; each exposes a function taking parsed args and returning an exit code."""

from simcluster.commands.estimate import estimate
from simcluster.commands.plan import plan
from simcluster.commands.simulate import simulate
from simcluster.commands.validate import validate

__all__ = ["estimate", "plan", "simulate", "validate"]
