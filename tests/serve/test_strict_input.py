"""Validation gaps (issue 15, point 6) over a real loopback socket: JSON values of the wrong type
are refused rather than coerced ("seed": "1", "seed": true), and an empty language is an error
rather than a silent fall-back to the server's default. (Clips too thin to be a voice and long
echoed values: tests/serve/test_voice_limits.py.)
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from websockets.sync.client import connect as ws_connect  # noqa: E402

from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import http_request, running_server  # noqa: E402


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    tts = TTS.from_local(tiny_checkpoint, max_sessions=1)
    with running_server(create_app(tts, ServeConfig(warmup=False, max_new_tokens=4))) as url:
        yield url


@pytest.mark.parametrize("field,value", [("seed", "1"), ("seed", True), ("max_tokens", "2"), ("language", ""),
                                         ("normalize", 1)])
def test_openai_refuses_coercion_and_empty_language(server, field, value):
    body = {"model": "nutq", "input": "مرحبا", "voice": "default", "response_format": "pcm", field: value}
    status, _, raw = http_request(server, "POST", "/v1/audio/speech", json.dumps(body),
                                  {"Content-Type": "application/json"})
    err = json.loads(raw)["error"]
    assert status == 400 and err["param"] == field and err["code"] == "invalid_value", err


@pytest.mark.parametrize("field,value", [("seed", "1"), ("seed", True), ("language_id", "")])
def test_seed_websocket_refuses_coercion_and_empty_language(server, field, value):
    with ws_connect(server.replace("http://", "ws://") + "/ws/tts", proxy=None, open_timeout=30) as ws:
        ws.send(json.dumps({"text": "مرحبا", field: value}))
        reply = json.loads(ws.recv(timeout=30))
    assert reply["status"] == "error" and reply["error"]["param"] == field and not reply["error"]["retryable"]


def test_native_and_deepgram_refuse_an_empty_language(server):
    with ws_connect(server.replace("http://", "ws://") + "/v1/tts/ws", proxy=None, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "config", "language": ""}))
        reply = json.loads(ws.recv(timeout=30))
    assert reply["type"] == "error" and reply["param"] == "language", reply
    status, _, raw = http_request(server, "POST", "/v1/speak?language=", json.dumps({"text": "مرحبا"}),
                                  {"Content-Type": "application/json"})
    assert status == 400 and json.loads(raw)["err_code"] == "INVALID_VALUE"
