"""Capacity with the default settings, and unexpected engine errors, through a real server.

32 OpenAI-endpoint requests at once on a tiny checkpoint with the default `TTS` and `ServeConfig`
all complete (4 decode, the rest wait in the scheduler's queue); an engine failure that is not a
client mistake is a 500 that names the request id, logged with it."""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import http_request, running_server, wait_released  # noqa: E402

CONCURRENT = 32


@pytest.fixture(scope="module")
def app(tiny_checkpoint):
    tts = TTS.from_local(tiny_checkpoint, device="cpu")  # every other setting at its default
    app = create_app(tts)
    yield app
    tts.close()


def speak(url: str, seed: int) -> tuple[int, bytes]:
    body = json.dumps({"model": "nutq", "input": "مرحبا بكم", "voice": "default", "response_format": "pcm",
                       "max_tokens": 6, "seed": seed})
    status, _, data = http_request(url, "POST", "/v1/audio/speech", body, {"Content-Type": "application/json"})
    return status, data


def test_32_concurrent_requests_all_complete_with_the_defaults(app):
    ctx = app.state.ctx
    assert ctx.engine.slots < CONCURRENT <= ctx.limiter.per_client <= ctx.limiter.total
    with running_server(app) as url:
        with ThreadPoolExecutor(CONCURRENT) as pool:
            results = list(pool.map(lambda i: speak(url, i), range(CONCURRENT)))
        assert [s for s, _ in results] == [200] * CONCURRENT, [d[:200] for s, d in results if s != 200]
        assert all(len(d) > 0 for _, d in results)
        stats = ctx.engine.stats()
        assert stats.admitted >= CONCURRENT and stats.queue_wait_s_max > 0  # some of them waited for a slot
        wait_released(app)


def test_an_unexpected_engine_error_is_a_logged_500_with_the_request_id(app, monkeypatch, caplog):
    def broken(*a, **k):
        raise ValueError("an engine invariant broke")  # a plain ValueError is not the client's fault

    monkeypatch.setattr(app.state.ctx.engine.start(), "step", broken)
    with running_server(app) as url, caplog.at_level(logging.ERROR, logger="nutq.serve.errors"):
        status, headers, body = http_request(url, "POST", "/v1/audio/speech", json.dumps(
            {"model": "nutq", "input": "مرحبا", "voice": "default", "max_tokens": 4}), {"Content-Type": "application/json"})
        rid = headers["x-request-id"]
        assert status == 500 and json.loads(body)["error"]["code"] == "internal_error"
        assert rid in json.loads(body)["error"]["message"]
        assert any(getattr(r, "request_id", None) == rid and "invariant" in r.getMessage() for r in caplog.records)
        wait_released(app)
