"""Blocking API: the async `Client` run on an event loop in a background thread, so that code
without asyncio gets the same protocol handling (one implementation, no second state machine).

    with nutq_client.sync.Client("ws://127.0.0.1:8000", voice="default") as client:
        ctx = client.context()
        ctx.send_text("مرحبا بكم.")
        ctx.close()
        for event in ctx: ...
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

from . import client as aio
from .events import Speech

__all__ = ["Client", "Context", "speak"]


class _Loop:
    """An event loop in a daemon thread; `run(coro)` blocks until the coroutine is done."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="nutq-client-loop", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


class Client:
    """Same arguments as `nutq_client.Client`."""

    def __init__(self, url: str = "ws://127.0.0.1:8000", **kwargs):
        self._loop = _Loop()
        try:
            self._client = self._loop.run(self._make(url, kwargs))
        except BaseException:
            self._loop.stop()
            raise

    @staticmethod
    async def _make(url: str, kwargs: dict) -> aio.Client:
        return aio.Client(url, **kwargs)  # built on the loop: its asyncio objects belong there

    def __enter__(self) -> "Client":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def reconnects(self) -> int:
        return self._client.reconnects

    def connect(self) -> None:
        self._loop.run(self._client.connect())

    def context(self, context_id: str | None = None, **settings) -> "Context":
        return Context(self._loop, self._client.context(context_id, **settings))

    def close(self) -> None:
        try:
            self._loop.run(self._client.aclose(), timeout=10)
        finally:
            self._loop.stop()


class Context:
    def __init__(self, loop: _Loop, ctx: aio.Context):
        self._loop, self._ctx = loop, ctx
        self.id = ctx.id

    def send_text(self, piece: str) -> None:
        self._loop.run(self._ctx.send_text(piece))

    def flush(self) -> None:
        self._loop.run(self._ctx.flush())

    def close(self) -> None:
        self._loop.run(self._ctx.close())

    def cancel(self) -> None:
        self._loop.run(self._ctx.cancel())

    def __iter__(self) -> Iterator:
        while True:
            try:
                yield self._loop.run(self._ctx.__anext__())
            except StopAsyncIteration:
                return

    def collect(self) -> Speech:
        return self._loop.run(self._ctx.collect())


def speak(text: str, url: str = "ws://127.0.0.1:8000", **kwargs) -> Speech:
    """Blocking `nutq_client.speak`."""
    loop = _Loop()
    try:
        return loop.run(aio.speak(text, url, **kwargs))
    finally:
        loop.stop()
