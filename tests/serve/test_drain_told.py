"""The drain waits for each protocol handler to say it has sent its client the last message of a
stream (`LiveStream.told`), not a fixed settle time: a handler slow to send its last message is
waited for, one that never tells is waited for no longer than the grace. Stand-in streams and
handlers (tests/serve/test_drain_cutoff.py drives the real protocols)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

uvicorn = pytest.importorskip("uvicorn")

from nutq.serve.drain import DrainingServer, cancel_streams  # noqa: E402


class _Stream:
    """A live stream whose handler, on abort, lets go of it at once and tells its client `slow_s`
    later (None: never)."""

    def __init__(self, ctx, slow_s: float | None):
        self.ctx, self.slow_s = ctx, slow_s
        self.last_message_at: float | None = None
        told = asyncio.Event()
        self.wait_told = told.wait
        self._tell = told.set
        ctx.live.add(self)
        ctx.telling.add(self)

    def abort(self, err) -> None:
        asyncio.get_running_loop().create_task(self._handler())

    async def _handler(self) -> None:
        await asyncio.sleep(0)
        self.ctx.live.discard(self)  # the handler closes its stream first ...
        if self.slow_s is None:
            return
        await asyncio.sleep(self.slow_s)  # ... and sends its last message later (I/O, a slow codec, ...)
        self.last_message_at = time.monotonic()
        self.told()

    def told(self) -> None:
        self.ctx.telling.discard(self)
        self._tell()

    async def aclose(self) -> None:
        self.ctx.live.discard(self)


def _ctx():
    return SimpleNamespace(live=set(), telling=set(), limiter=SimpleNamespace(active=0),
                           config=SimpleNamespace(drain_timeout_s=30.0), draining=False)


def test_cancel_waits_for_a_handler_slow_to_send_its_last_message():
    async def main():
        ctx = _ctx()
        slow, quick = _Stream(ctx, 0.6), _Stream(ctx, 0.0)  # 0.6 s: longer than any fixed settle would be
        n = await cancel_streams(ctx, grace_s=10.0)
        returned = time.monotonic()
        return n, slow, quick, returned

    n, slow, quick, returned = asyncio.run(main())
    assert n == 2
    assert slow.last_message_at is not None and quick.last_message_at is not None
    assert slow.last_message_at <= returned


def test_cancel_gives_up_on_a_handler_that_never_tells_at_the_grace():
    async def main():
        ctx = _ctx()
        silent = _Stream(ctx, None)
        t0 = time.monotonic()
        n = await cancel_streams(ctx, grace_s=0.3)
        return n, silent, time.monotonic() - t0

    n, silent, waited = asyncio.run(main())
    assert n == 1 and silent.last_message_at is None
    assert 0.3 <= waited < 5.0  # the grace, not forever


def test_a_drain_without_running_streams_waits_for_last_messages_still_being_sent():
    async def main():
        ctx = _ctx()
        server = DrainingServer(uvicorn.Config(app=None), ctx)
        server.begin_drain()
        stream = _Stream(ctx, None)
        ctx.live.discard(stream)  # finished decoding; its handler is sending the last message
        before = await server.on_tick(1)
        stream.told()
        after = await server.on_tick(2)
        return before, after

    assert asyncio.run(main()) == (False, True)
