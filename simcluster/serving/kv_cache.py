"""Paged KV cache of one scheduler: fixed-size blocks, a prefix cache over block hashes, host swap.

Blocks are counted, not named: a sequence holds `blocks` private blocks plus pinned prefix-cache
entries. A prefix-cache entry is one cache unit of the trace (Mooncake: 512 tokens) keyed by its
hash id and holding unit_tokens / block_size engine blocks. Entries nobody pins stay cached and
are evicted least recently used first when blocks run short (vLLM's automatic prefix caching
evicts unreferenced blocks LRU; see vLLM docs "Automatic Prefix Caching").
"""

from __future__ import annotations

from collections import OrderedDict


def blocks_for(tokens: int, block_size: int) -> int:
    """Blocks that hold `tokens` tokens (the last block may be partly filled)."""
    return -(-tokens // block_size)


class KvCache:
    """Block accounting of one KV cache. All counts are in blocks of `block_size` tokens.

    total_blocks: blocks on the GPU; unit_blocks: blocks per prefix-cache entry (0 disables
    prefix caching); swap_blocks: blocks the host swap space holds; index: optional shared
    {key: set of owners} that a prefix-affinity router reads, `owner` being this cache's tag.
    """

    def __init__(self, total_blocks: int, block_size: int, unit_blocks: int = 0, swap_blocks: int = 0,
                 index: dict | None = None, owner: int = 0):
        self.total = total_blocks
        self.block_size = block_size
        self.unit_blocks = unit_blocks
        self.used = 0                 # private blocks + blocks of every cache entry
        self.entries: dict[int, int] = {}                  # key -> pin count
        self.lru: OrderedDict[int, None] = OrderedDict()   # unpinned keys, least recent first
        self.swap_total = swap_blocks
        self.swap_used = 0
        self.index = index
        self.owner = owner
        self.hits = 0

    @property
    def free(self) -> int:
        return self.total - self.used

    @property
    def evictable(self) -> int:
        return len(self.lru) * self.unit_blocks

    @property
    def available(self) -> int:
        """Blocks an allocation can get now, evicting unpinned cache entries if it must."""
        return self.total - self.used + len(self.lru) * self.unit_blocks

    def allocate(self, n: int) -> None:
        """Take n private blocks, evicting LRU entries as needed; the caller checked `available`."""
        while self.total - self.used < n:
            key, _ = self.lru.popitem(last=False)
            del self.entries[key]
            self.used -= self.unit_blocks
            if self.index is not None:
                self.index[key].discard(self.owner)
        self.used += n

    def release(self, n: int) -> None:
        self.used -= n

    # -- prefix cache -----------------------------------------------------------------------------
    def match(self, keys) -> int:
        """How many leading keys are cached (0 when prefix caching is off)."""
        if not self.unit_blocks or keys is None:
            return 0
        entries = self.entries
        n = 0
        for key in keys:
            if key not in entries:
                break
            n += 1
        return n

    def pinned_evictable(self, keys, n: int) -> int:
        """Blocks that pinning the first n keys would take out of the evictable pool."""
        lru = self.lru
        return sum(self.unit_blocks for key in keys[:n] if key in lru)

    def pin(self, keys, n: int) -> tuple:
        """Pin the first n keys (they were matched); returns them as the holder's refs."""
        refs = tuple(keys[:n])
        entries, lru = self.entries, self.lru
        for key in refs:
            if entries[key] == 0:
                del lru[key]
            entries[key] += 1
        self.hits += n
        return refs

    def unpin(self, refs) -> None:
        """Drop pins; entries nobody pins become evictable. The tail of a prompt is released first,
        so it is evicted before the shared head (vLLM frees a sequence's blocks in reverse order)."""
        entries, lru = self.entries, self.lru
        for key in reversed(refs):
            entries[key] -= 1
            if entries[key] == 0:
                lru[key] = None

    def insert(self, keys, start: int, private_blocks: int) -> tuple[tuple, int]:
        """Turn the holder's private blocks of cache units keys[start:] into pinned entries.

        Returns (new refs, private blocks handed over). A key another sequence inserted meanwhile
        is pinned instead and the duplicate private blocks are freed.
        """
        refs = []
        moved = 0
        entries, lru = self.entries, self.lru
        u = self.unit_blocks
        for key in keys[start:]:
            if moved + u > private_blocks:
                break
            moved += u
            if key in entries:
                if entries[key] == 0:
                    del lru[key]
                entries[key] += 1
                self.used -= u     # the private copy is dropped
            else:
                entries[key] = 1
                if self.index is not None:
                    self.index.setdefault(key, set()).add(self.owner)
            refs.append(key)
        return tuple(refs), moved
