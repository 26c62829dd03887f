"""`SpeechQueue`: one connection's utterances, spoken one after another by one task, while the
connection goes on reading client messages.

WebSocket protocols that take several utterances on one socket (Deepgram's flushes, the seed's
requests) queue them here in arrival order. `clear()` is barge-in and disconnect: pending jobs are
dropped and the running one is cancelled, and it returns only once that job's cleanup has run
(the stream's `aclose`, which gives its KV slot back), so a protocol can then confirm the clear
knowing that nothing more of it will be sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

__all__ = ["SpeechQueue"]

log = logging.getLogger(__name__)

J = TypeVar("J")


class SpeechQueue(Generic[J]):
    """`put(job)` queues `speak(job)`; jobs run in order, one at a time, in one task.

    `pending` holds the jobs not started yet (a protocol may merge into its last one). A job that
    raises ends the queue's current run and drops what is pending: protocols answer their clients'
    errors themselves, so an exception here means the connection itself failed (client gone).
    """

    def __init__(self, speak: Callable[[J], Awaitable[None]]):
        self._speak = speak
        self.pending: deque[J] = deque()
        self._task: asyncio.Task | None = None

    @property
    def busy(self) -> bool:
        """Something is being spoken or waits to be."""
        return bool(self.pending) or (self._task is not None and not self._task.done())

    def put(self, job: J) -> None:
        self.pending.append(job)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while self.pending:
            job = self.pending.popleft()
            try:
                await self._speak(job)
            except Exception:  # noqa: BLE001 - the connection failed; nothing queued can be delivered
                log.debug("speech job failed; dropping %d pending", len(self.pending), exc_info=True)
                self.pending.clear()
                return

    async def join(self) -> None:
        """Wait until every queued job has been spoken."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])

    async def clear(self) -> None:
        """Drop pending jobs, cancel the running one and wait for its cleanup."""
        self.pending.clear()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            # asyncio.wait, not `await task`: a cancellation of *our* caller must still propagate.
            await asyncio.wait([task])
