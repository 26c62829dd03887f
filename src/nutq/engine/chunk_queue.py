"""Where a session's chunks go: the engine and vocoder threads `put`, one consumer takes.

`ChunkQueue` is read by a thread (`get` blocks). `LoopChunkQueue` is read on an asyncio event
loop: `put` schedules the item onto the loop with `call_soon_threadsafe`, so a chunk goes from
the vocoder thread to the awaiting coroutine with no thread in between.

Both count what the consumer has not taken yet (`qsize`): the scheduler pauses a session whose
consumer has `MAX_UNREAD_CHUNKS` waiting. A queue made with a smaller `limit` reports itself full
(`MAX_UNREAD_CHUNKS`) once `limit` chunks wait, so that a stream can ask for a tighter bound
(a server's per-stream buffer) than the scheduler's own.
"""

from __future__ import annotations

import asyncio
import threading
from queue import SimpleQueue

__all__ = ["ChunkQueue", "LoopChunkQueue", "MAX_UNREAD_CHUNKS"]

MAX_UNREAD_CHUNKS = 4  # chunks a session may have ready for its consumer before it stops decoding


class _Counted:
    def __init__(self, limit: int | None):
        if limit is not None and limit < 1:
            raise ValueError(f"a chunk queue's limit must be >= 1 or None, got {limit}")
        self._limit = MAX_UNREAD_CHUNKS if limit is None else min(limit, MAX_UNREAD_CHUNKS)
        self._lock = threading.Lock()
        self._unread = 0

    def _added(self) -> None:
        with self._lock:
            self._unread += 1

    def _taken(self) -> None:
        with self._lock:
            self._unread -= 1

    def qsize(self) -> int:
        with self._lock:
            n = self._unread
        return MAX_UNREAD_CHUNKS if n >= self._limit else n


class ChunkQueue(_Counted):
    """Read from a thread."""

    def __init__(self, limit: int | None = None):
        super().__init__(limit)
        self._q: SimpleQueue = SimpleQueue()

    def put(self, item) -> None:
        self._added()
        self._q.put(item)

    def get(self):
        item = self._q.get()
        self._taken()
        return item


class LoopChunkQueue(_Counted):
    """Read on `loop` (`await aget()`); `put` from any thread. Once the loop is closed, items are
    dropped: nobody is listening any more."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int | None = None):
        super().__init__(limit)
        self._loop = loop
        self._q: asyncio.Queue = asyncio.Queue()
        self.on_loop_closed = None  # called (from the putting thread) when the loop is gone

    def put(self, item) -> None:
        self._added()
        try:
            self._loop.call_soon_threadsafe(self._q.put_nowait, item)
        except RuntimeError:  # the loop is closed: stop the session rather than decode for nobody
            if self.on_loop_closed is not None:
                self.on_loop_closed()

    async def aget(self):
        item = await self._q.get()
        self._taken()
        return item
