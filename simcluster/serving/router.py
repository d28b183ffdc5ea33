"""Routers: pick the replica for each arriving request. A router is a function in ROUTERS."""

from __future__ import annotations

from itertools import count


def round_robin():
    turn = count()

    def pick(replicas, seq):
        return replicas[next(turn) % len(replicas)]
    return pick


def least_outstanding():
    def pick(replicas, seq):
        # Ties go to the lowest index, so the choice is deterministic.
        return min(replicas, key=lambda r: r.outstanding)
    return pick


def least_kv():
    def pick(replicas, seq):
        return min(replicas, key=lambda r: (r.kv_load, r.outstanding))
    return pick


ROUTERS = {
    "round_robin": round_robin,
    "least_outstanding": least_outstanding,
    "least_kv": least_kv,
}
DEFAULT_ROUTER = "least_outstanding"
