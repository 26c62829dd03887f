"""A preallocated KV-cache pool whose slots are leased to sessions.

One `KVCache` holds `slots x 2` batch rows (each session's CFG rows: conditional, unconditional).
Allocating a full-size cache per utterance costs hundreds of MB of zeroing on the request path; a
pool pays it once. Slots are never cleared on release: a session only reads positions it has
written (attention stops at its own `kv_len`), so stale keys from a previous tenant are invisible.
"""

from __future__ import annotations

import heapq
import threading

import torch

from ..errors import BusyError
from ..models.llama import KVCache, KVView, LlamaConfig

__all__ = ["CACHE_ALIGN", "KVPool", "KVSlot", "PoolExhausted", "ROWS_PER_SESSION", "aligned_cache_len"]

ROWS_PER_SESSION = 2  # CFG: conditional and unconditional rows
# The engine's cache length is a multiple of this. The cache length is the last attention span
# of the batched step (a CUDA graph per span) and the key length its attention reads there:
# fused attention kernels tile keys in blocks of 64 or 128, and the memory-efficient kernel wants
# its mask's last dimension aligned to 16 elements (PyTorch pads an unaligned mask on every call,
# a copy per layer per step). 1500 (the old default) is neither; 1536 is both, and equals
# 1024 + 512, so the top span is a whole number of tiles like the smaller spans.
CACHE_ALIGN = 64


def aligned_cache_len(n: int) -> int:
    """`n` positions rounded up to a multiple of `CACHE_ALIGN` (1500 -> 1536)."""
    return -(-n // CACHE_ALIGN) * CACHE_ALIGN


class PoolExhausted(BusyError):
    """Every slot is leased; the caller should queue or retry later."""


class KVSlot:
    """A leased slot: `cache` is a view of its two rows. Release it exactly once (a second release
    is a no-op, so `finally` blocks may call it unconditionally)."""

    def __init__(self, pool: "KVPool", index: int):
        self.pool, self.index = pool, index
        self.cache: KVView | None = pool.cache.rows(index * ROWS_PER_SESSION, ROWS_PER_SESSION)

    def release(self) -> None:
        if self.cache is not None:
            self.cache = None
            self.pool._give_back(self.index)


class KVPool:
    def __init__(self, cfg: LlamaConfig, slots: int, max_len: int, *, device=None, dtype=torch.float32):
        if slots < 1 or max_len < 2:
            raise ValueError(f"a KV pool needs >= 1 slot and max_len >= 2, got slots={slots}, max_len={max_len}")
        self.cache = KVCache(cfg, slots * ROWS_PER_SESSION, max_len, device=device, dtype=dtype)
        # A min-heap: the lowest free slot goes out first, so sessions pack into low slots and a
        # batched step's bucket (the prefix up to the highest slot in use) stays small.
        self._free = list(range(slots))
        self._lock = threading.Lock()
        self.slots = slots

    @property
    def max_len(self) -> int:
        return self.cache.max_len

    @property
    def in_use(self) -> int:
        with self._lock:
            return self.slots - len(self._free)

    def lease(self) -> KVSlot:
        with self._lock:
            if not self._free:
                raise PoolExhausted(f"all {self.slots} KV-cache slots are in use")
            index = heapq.heappop(self._free)
        return KVSlot(self, index)

    def _give_back(self, index: int) -> None:
        with self._lock:
            heapq.heappush(self._free, index)
