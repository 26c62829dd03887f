"""`/metrics`: Prometheus text that moves with the traffic, open or behind the API key by config."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.serve.metrics import CONTENT_TYPE  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import http_request, running_server  # noqa: E402

KEY = "metrics-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TOKENS = 8


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint, max_sessions=1)


@pytest.fixture(scope="module")
def server(tts):
    with running_server(create_app(tts, ServeConfig(api_keys=(KEY,)))) as url:
        yield url


def scrape(url: str, headers: dict | None = None) -> dict[tuple[str, frozenset], float]:
    status, head, body = http_request(url, "GET", "/metrics", headers=headers)
    assert status == 200, body
    assert head["content-type"] == CONTENT_TYPE
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def speak(url: str, voice: str = "default") -> int:
    body = {"model": "nutq", "input": "مرحبا بكم", "voice": voice, "response_format": "pcm",
            "max_tokens": TOKENS, "seed": 1}
    status, _, raw = http_request(url, "POST", "/v1/audio/speech", json.dumps(body),
                                  {"Content-Type": "application/json", **AUTH})
    assert raw, "empty response"
    return status


def test_a_finished_stream_and_a_refused_one_move_the_metrics(server):
    before = scrape(server)
    assert speak(server) == 200
    assert speak(server, voice="no-such-voice") == 404
    after = scrape(server)

    def moved(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("nutq_time_to_first_audio_seconds_count", protocol="openai") == 1
    assert moved("nutq_time_to_first_audio_seconds_sum", protocol="openai") > 0
    assert moved("nutq_streams_total", protocol="openai", outcome="completed") == 1
    assert moved("nutq_tokens_per_second_count") >= 1 and moved("nutq_tokens_per_second_sum") > 0
    assert moved("nutq_real_time_factor_count") == 1
    assert moved("nutq_queue_wait_seconds_count") == 1
    assert moved("nutq_errors_total", code="voice_not_found") == 1
    assert value(after, "nutq_active_streams") == 0, "a finished stream is still counted as active"


def test_metrics_are_open_by_default_and_keyed_when_private(server, tts):
    scrape(server)  # keys are configured, yet no key is needed
    with running_server(create_app(tts, ServeConfig(api_keys=(KEY,), metrics_public=False, warmup=False))) as url:
        status, _, raw = http_request(url, "GET", "/metrics")
        assert status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
        samples = scrape(url, AUTH)
    assert value(samples, "nutq_errors_total", code="invalid_api_key") == 1, "the refused scrape was not counted"
