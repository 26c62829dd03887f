"""Freed heap memory goes back to the OS after streams end (serve.heap)."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from nutq.serve.heap import HeapTrimmer, glibc_malloc_trim


def test_trims_in_the_background_at_most_once_per_interval():
    calls, release = [], threading.Event()

    def slow_trim(pad):
        calls.append(pad)
        release.wait(5)
        return 1

    h = HeapTrimmer(slow_trim, min_interval_s=0.2)
    t = h.after_stream()
    assert t is not None and h.after_stream() is None, "one trim at a time"
    release.set()
    t.join(5)
    assert calls == [0] and h.trims == 1
    assert h.after_stream() is None, "not again within the interval"
    time.sleep(0.25)
    h.after_stream().join(5)
    assert h.trims == 2


def test_a_failing_trim_is_logged_not_raised(caplog):
    def broken(pad):
        raise OSError("no")

    HeapTrimmer(broken).after_stream().join(5)
    assert "malloc_trim failed" in caplog.text


def test_without_malloc_trim_nothing_happens():
    h = HeapTrimmer(None)
    assert not h.available and h.after_stream() is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_glibc_trim_really_runs_here():
    fn = glibc_malloc_trim()
    assert fn is not None and fn(0) in (0, 1)


def test_the_server_trims_after_a_stream(tiny_checkpoint):
    """Every protocol closes its streams through ServerContext: one ended stream, one trim."""
    import asyncio

    from nutq.engine.sampling import SamplingParams
    from nutq.serve.config import ServeConfig
    from nutq.serve.context import ServerContext, StreamOptions
    from nutq.tts import TTS

    ctx = ServerContext(TTS.from_local(tiny_checkpoint).engine, ServeConfig())
    seen = []
    ctx.heap = HeapTrimmer(lambda pad: seen.append(pad) or 1, min_interval_s=0)

    async def one():
        live = await ctx.open_stream(StreamOptions(text="مرحبا", params=SamplingParams(max_new_tokens=4)), client="c", protocol="openai")
        async for _ in live:
            pass
        await live.aclose()

    asyncio.run(one())
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen == [0]
