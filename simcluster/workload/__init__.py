"""Workloads for the serving simulator: traces read from public datasets and synthetic streams."""

from simcluster.workload.lengths import Empirical, Fixed, Lengths, Lognormal, TraceLengths, Uniform, Zipf
from simcluster.workload.readers import (
    READERS,
    read_azure,
    read_burstgpt,
    read_mooncake,
    read_table,
    read_trace,
    sniff_format,
)
from simcluster.workload.synthetic import ARRIVALS, diurnal, gamma, generate, length_dist, poisson
from simcluster.workload.trace import Trace, TraceError

__all__ = [
    "ARRIVALS", "READERS", "Empirical", "Fixed", "Lengths", "Lognormal", "Trace", "TraceError",
    "TraceLengths", "Uniform", "Zipf", "diurnal", "gamma", "generate", "length_dist", "poisson",
    "read_azure", "read_burstgpt", "read_mooncake", "read_table", "read_trace", "sniff_format",
]
