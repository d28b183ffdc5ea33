"""KvCache: block counts, LRU eviction of unpinned prefix entries, pin/unpin, insert dedupe, index."""

from simcluster.serving.kv_cache import KvCache, blocks_for


def test_blocks_for_rounds_up():
    assert [blocks_for(t, 16) for t in (0, 1, 16, 17, 32)] == [0, 1, 1, 2, 2]


def test_unpinned_entries_are_evicted_least_recently_used_first():
    index = {}
    kv = KvCache(total_blocks=10, block_size=16, unit_blocks=2, index=index, owner=7)
    kv.allocate(6)                                   # a sequence's private blocks, 3 units' worth
    refs, moved = kv.insert((1, 2, 3), 0, 6)
    assert refs == (1, 2, 3) and moved == 6 and kv.used == 6
    assert index == {1: {7}, 2: {7}, 3: {7}}
    kv.unpin(refs)                                   # tail first: 3, then 2, then 1 become evictable
    assert list(kv.lru) == [3, 2, 1] and kv.available == 10
    kv.allocate(7)                                   # needs 3 more than the 4 free: evicts key 3 then 2
    assert set(kv.entries) == {1} and kv.used == 9
    assert index[3] == set() and index[2] == set() and index[1] == {7}


def test_pinning_a_cached_prefix_takes_it_out_of_the_evictable_pool():
    kv = KvCache(total_blocks=8, block_size=16, unit_blocks=2)
    kv.allocate(4)
    refs, _ = kv.insert((5, 6), 0, 4)
    kv.unpin(refs)
    assert kv.match((5, 6, 9)) == 2 and kv.match((6,)) == 1 and kv.match((9, 5)) == 0
    assert kv.pinned_evictable((5, 6), 1) == 2
    pinned = kv.pin((5, 6, 9), 1)
    assert pinned == (5,) and kv.evictable == 2 and kv.hits == 1


def test_inserting_a_key_another_sequence_cached_meanwhile_drops_the_copy():
    kv = KvCache(total_blocks=8, block_size=16, unit_blocks=2)
    kv.allocate(2)
    kv.insert((4,), 0, 2)
    kv.allocate(2)                                   # a second sequence computed the same unit
    refs, moved = kv.insert((4,), 0, 2)
    assert refs == (4,) and moved == 2
    assert kv.used == 2 and kv.entries[4] == 2


def test_prefix_caching_off_matches_nothing():
    kv = KvCache(total_blocks=8, block_size=16, unit_blocks=0)
    assert kv.match((1, 2)) == 0 and kv.match(None) == 0
