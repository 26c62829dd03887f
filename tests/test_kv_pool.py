"""KV pool slots: the lowest free slot is leased first, whatever order they came back in."""

from nutq.engine.kv_pool import KVPool
from nutq.models.t3 import T3_TINY


def test_free_slots_are_reused_lowest_first():
    pool = KVPool(T3_TINY.llama, 5, 8)
    slots = [pool.lease() for _ in range(5)]
    assert [s.index for s in slots] == [0, 1, 2, 3, 4]
    for k in (3, 0, 4, 1):
        slots[k].release()
    # an old session on slot 2 must not make newcomers go to 3 and 4 (a larger step bucket)
    assert [pool.lease().index for _ in range(4)] == [0, 1, 3, 4]
    assert pool.in_use == 5
