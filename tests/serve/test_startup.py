"""The server builds the engine's scheduler (CUDA graph capture on a GPU) at startup, in a worker
thread: the event loop keeps answering meanwhile, and the scheduler exists before any request."""

from __future__ import annotations

import asyncio
import threading

import pytest

from nutq.serve.app import create_app
from nutq.serve.config import ServeConfig
from nutq.tts import TTS

from tests.serve.helpers import get_json, running_server


@pytest.fixture
def tts(tiny_checkpoint):
    t = TTS.from_local(tiny_checkpoint, max_sessions=1)
    yield t
    t.close()


@pytest.mark.parametrize("warmup", [False, True])
def test_startup_builds_the_scheduler_off_the_event_loop(tts, warmup):
    engine, real_start = tts.engine, tts.engine.start
    release, called = threading.Event(), []

    def slow_start():  # a capture that takes as long as the test wants
        try:
            asyncio.get_running_loop()
            called.append("on the event loop")
        except RuntimeError:
            called.append("in a worker thread")
        assert release.wait(30)
        return real_start()

    engine.start = slow_start
    assert engine.stats() is None  # no scheduler yet
    with running_server(create_app(tts, ServeConfig(warmup=warmup)), ready_path="/healthz", timeout=20) as url:
        # the start is blocked: the loop still answers, and the server says it is not ready yet
        assert get_json(url, "/healthz") == (200, {"status": "ok"})
        status, body = get_json(url, "/readyz")
        assert status == 503 and engine.stats() is None
        release.set()
        for _ in range(600):
            if get_json(url, "/readyz")[0] == 200:
                break
            threading.Event().wait(0.05)
        assert get_json(url, "/readyz")[0] == 200
        stats = engine.stats()
        assert stats is not None, "the scheduler exists before the first request"
        assert stats.admitted == (1 if warmup else 0)  # only the warmup synthesis, if any, ran on it
    assert called and set(called) == {"in a worker thread"}  # (the warmup stream asks for it again)
