"""Routers: pick the replica for each arriving request. A router is a factory in ROUTERS.

Each factory takes keyword context (`prefix_index`: {cache key: replica indices holding it}) and
returns pick(replicas, seq) -> replica. Ties go to the lowest index, so runs are deterministic.
"""

from __future__ import annotations

from itertools import count
from operator import attrgetter

_outstanding = attrgetter("outstanding")


def round_robin(**_context):
    turn = count()

    def pick(replicas, seq):
        return replicas[next(turn) % len(replicas)]
    return pick


def least_outstanding(**_context):
    def pick(replicas, seq):
        return min(replicas, key=_outstanding)
    return pick


def least_kv(**_context):
    def pick(replicas, seq):
        return min(replicas, key=lambda r: (r.kv_load, r.outstanding))
    return pick


def longest_prefix_owners(index: dict, keys) -> tuple[set, int]:
    """Replica indices holding the longest cached prefix of `keys`, and its length in cache units."""
    owners: set = set()
    n = 0
    if keys is None:
        return owners, 0
    for key in keys:
        holding = index.get(key)
        if not holding:
            break
        narrowed = holding if n == 0 else owners & holding
        if not narrowed:
            break
        owners, n = narrowed, n + 1
    return owners, n


def prefix_affinity(prefix_index: dict | None = None, balance_abs_requests: int = 16, **_context):
    """Send a request to the replica caching the longest prefix of its prompt (least loaded among
    equals); when none caches any, or the chosen one has more than balance_abs_requests more
    outstanding requests than the least loaded replica, send it to the least loaded instead (the
    load guard of cache-aware routers such as SGLang's, whose default absolute threshold is 32)."""
    index = prefix_index if prefix_index is not None else {}

    def pick(replicas, seq):
        least = min(replicas, key=_outstanding)
        owners, n = longest_prefix_owners(index, seq.hashes)
        if not n:
            return least
        best = min((replicas[i] for i in sorted(owners)), key=_outstanding)
        if best.outstanding - least.outstanding > balance_abs_requests:
            return least
        return best
    return pick


ROUTERS = {
    "round_robin": round_robin,
    "least_outstanding": least_outstanding,
    "least_kv": least_kv,
    "prefix_affinity": prefix_affinity,
}
DEFAULT_ROUTER = "least_outstanding"
