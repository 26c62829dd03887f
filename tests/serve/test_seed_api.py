"""The seed's simple protocol (`WS /ws/tts`, `GET /tts/stream`, `GET /latency`) over a real socket.

One uvicorn server (tiny random checkpoint, one KV slot) serves the module. Audio is checked
against `TTS.stream` run in-process with the same seed and settings.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlencode

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
ws_client = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import ConnectionClosed  # noqa: E402

from nutq.engine.sampling import SamplingParams  # noqa: E402
from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.audio_out import to_int16  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import connect, http_request, running_server, wait_released  # noqa: E402

KEY = "seed-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXT = "مرحبا بكم"
OTHER = "أهلا وسهلا"
LONG = "مرحبا بكم. " * 12  # ~12 phrases: runs for seconds unless cancelled
TOKENS = 12


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint, max_sessions=1)


@pytest.fixture(scope="module")
def app(tts):
    return create_app(tts, ServeConfig(api_keys=(KEY,), max_new_tokens=400, max_input_chars=1000))


@pytest.fixture(scope="module")
def server(app):
    with running_server(app) as url:
        yield url


_expected: dict[tuple[str, int], bytes] = {}


def expected(tts, text: str, seed: int) -> bytes:
    """The s16le bytes the server should send: the same text, voice, settings and seed in-process."""
    if (text, seed) not in _expected:
        chunks = tts.stream(text, tts.voices.get("default"), "ar", params=SamplingParams(max_new_tokens=TOKENS),
                            seed=seed)
        _expected[text, seed] = to_int16(np.concatenate([c.audio for c in chunks])).tobytes()
    return _expected[text, seed]


def request(text: str, seed: int, **extra) -> dict:
    return {"text": text, "language_id": "ar", "speaker_id": "default", "seed": seed, "max_tokens": TOKENS, **extra}


def ws_connect(server: str, headers: dict | None = None):
    url = server.replace("http://", "ws://", 1) + "/ws/tts"
    return ws_client.connect(url, additional_headers=AUTH if headers is None else headers, open_timeout=30)


def recv_reply(ws, timeout: float = 60) -> tuple[bytes, dict]:
    """(audio, the JSON message that ended it: complete or error)."""
    audio = bytearray()
    while isinstance(msg := ws.recv(timeout=timeout), bytes):
        audio += msg
    return bytes(audio), json.loads(msg)


def test_ws_requests_on_one_socket_are_answered_in_order(server, app, tts):
    wait_released(app)
    with ws_connect(server) as ws:
        ws.send(json.dumps(request(TEXT, seed=3)))
        ws.send(json.dumps(request(OTHER, seed=4)))  # sent before the first is done: queued behind it
        first, done1 = recv_reply(ws)
        second, done2 = recv_reply(ws)
    for done in (done1, done2):
        assert done["status"] == "complete" and isinstance(done["latency_ms"], float) and done["latency_ms"] > 0
    assert first == expected(tts, TEXT, 3) and second == expected(tts, OTHER, 4), "audio differs, mixed or reordered"


BAD_REQUESTS = [
    ("not json", "invalid_json"),
    (b"\x00\x01", "unsupported_message"),
    (json.dumps(["text"]), "invalid_value"),
    (json.dumps({"speaker_id": "default"}), "invalid_value"),
    (json.dumps({"text": 5}), "invalid_value"),
    (json.dumps(request(TEXT, 3, speaker_id="nope")), "voice_not_found"),
    (json.dumps(request(TEXT, 3, language_id="xx")), "invalid_value"),
    (json.dumps(request("ا" * 1001, 3)), "input_too_long"),
]


def test_ws_errors_answer_in_band_and_keep_the_socket_usable(server, app, tts):
    wait_released(app)
    with ws_connect(server) as ws:
        for msg, code in BAD_REQUESTS:
            ws.send(msg)
            audio, reply = recv_reply(ws)
            assert audio == b"" and reply["status"] == "error", reply
            err = reply["error"]
            assert err["code"] == code and err["message"] and err["retryable"] is False, (msg, reply)
        ws.send(json.dumps(request(TEXT, seed=3)))
        audio, done = recv_reply(ws)
    assert done["status"] == "complete" and audio == expected(tts, TEXT, 3)


def test_ws_needs_a_key(server):
    with ws_connect(server, headers={}) as ws:
        reply = json.loads(ws.recv(timeout=10))
        assert reply["status"] == "error" and reply["error"]["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1008


def test_ws_disconnect_mid_stream_frees_the_session_at_once(server, app, tts):
    wait_released(app)
    with ws_connect(server) as ws:
        ws.send(json.dumps(request(LONG, seed=3)))
        assert isinstance(ws.recv(timeout=60), bytes) and app.state.ctx.live
        ws.socket.shutdown(socket.SHUT_RDWR)  # hang up without a close handshake
        wait_released(app, timeout=5)


def stream_path(**params) -> str:
    return "/tts/stream?" + urlencode(params)


def test_http_stream_is_chunked_pcm_with_format_headers(server, app, tts):
    wait_released(app)
    status, headers, body = http_request(server, "GET", stream_path(**request(TEXT, seed=3)), headers=AUTH)
    assert status == 200, body
    assert headers["x-sample-rate"] == "24000" and headers["x-channels"] == "1" and headers["x-format"] == "s16le"
    assert headers.get("transfer-encoding") == "chunked" and "content-length" not in headers
    assert body == expected(tts, TEXT, 3)


@pytest.mark.parametrize("params, headers, status, code", [
    (request(TEXT, 3), {}, 401, "invalid_api_key"),
    (request(TEXT, 3, speaker_id="nope"), AUTH, 404, "voice_not_found"),
    ({"language_id": "ar"}, AUTH, 400, "invalid_value"),
    (request(TEXT, 3, max_tokens="many"), AUTH, 400, "invalid_value"),
])
def test_http_stream_errors(server, app, params, headers, status, code):
    got, _, raw = http_request(server, "GET", stream_path(**params), headers=headers)
    assert got == status, raw
    reply = json.loads(raw)
    assert reply["status"] == "error" and reply["error"]["code"] == code
    wait_released(app)


def test_http_client_disconnect_frees_the_session_at_once(server, app, tts):
    wait_released(app)
    conn = connect(server)
    conn.request("GET", stream_path(**request(LONG, seed=3)), headers=AUTH)
    r = conn.getresponse()
    assert r.status == 200 and r.read1(4096) and app.state.ctx.live
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    wait_released(app, timeout=5)  # also checks the admission was given back, not just the KV slot


def test_latency_summarizes_recent_streams_of_every_protocol(server, app):
    wait_released(app)
    with ws_connect(server) as ws:
        ws.send(json.dumps(request(TEXT, seed=3)))
        _, done = recv_reply(ws)
    status, _, raw = http_request(server, "GET", "/latency", headers=AUTH)
    assert status == 200
    stats = json.loads(raw)
    assert stats["count"] == len(app.state.ctx.recent_latencies) >= 1
    assert stats["last_ms"] == done["latency_ms"], "the latest stream's latency is not the one reported"
    assert 0 < stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"]
    assert http_request(server, "GET", "/latency")[0] == 401
