"""Deepgram-compatible `POST /v1/speak` and `WS /v1/speak` over a real loopback socket.

One uvicorn server (tiny random checkpoint, one KV slot) serves the module; clients send what the
stock LiveKit and Pipecat Deepgram plugins send (`Authorization: Token`, model/encoding/sample_rate
in the query). Audio is checked against `TTS.stream` run in-process with the same seed and
settings: the server must add nothing but encoding.
"""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
ws_client = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import ConnectionClosed  # noqa: E402

from nutq.engine.sampling import SamplingParams  # noqa: E402
from nutq.serve import g711  # noqa: E402
from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.audio_out import to_int16  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import http_request, running_server, wait_released  # noqa: E402

KEY = "dg-test-key"
TEXT = "مرحبا بكم"  # no sentence end: spoken only when flushed
SENTENCE = "مرحبا بكم. "  # a complete sentence: spoken without waiting for a flush
LONG = SENTENCE * 12  # ~12 phrases: runs for seconds unless cancelled
TOKENS = 12  # per phrase: short outputs keep the module fast
SEED = 3
SAMPLES_PER_TOKEN = 960  # 24 kHz / 25 tokens per second
Q = f"model=default&seed={SEED}&max_tokens={TOKENS}"  # nutq's extensions make the audio reproducible
AUTH = {"Authorization": f"Token {KEY}"}


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


_expected: dict[tuple[str, int], np.ndarray] = {}


def expected(tts, text: str = TEXT, seed: int = SEED) -> np.ndarray:
    """What the server should send (float32, 24 kHz): the same text, voice, settings and seed in-process."""
    if (text, seed) not in _expected:
        chunks = tts.stream(text, tts.voices.get("default"), "ar", params=SamplingParams(max_new_tokens=TOKENS),
                            seed=seed)
        _expected[text, seed] = np.concatenate([c.audio for c in chunks])
    return _expected[text, seed]


def pcm16(x: np.ndarray) -> bytes:
    return to_int16(x).tobytes()


def post(server, query: str, body: object = None, headers: dict | None = None):
    raw = json.dumps({"text": TEXT} if body is None else body).encode() if not isinstance(body, bytes) else body
    return http_request(server, "POST", f"/v1/speak?{query}", raw,
                        {"Content-Type": "application/json", **(AUTH if headers is None else headers)})


# -- REST ---------------------------------------------------------------------------------------


def test_rest_linear16_without_container_is_exactly_the_engine_audio(server, tts):
    status, headers, body = post(server, f"{Q}&encoding=linear16&sample_rate=24000&container=none")
    assert status == 200, body
    assert headers["content-type"] == "audio/pcm;rate=24000"
    assert headers["dg-request-id"] and headers["dg-model-name"] == "default"
    assert headers["dg-char-count"] == str(len(TEXT))
    assert body == pcm16(expected(tts)), "the served PCM differs from TTS.stream with the same seed and settings"


def test_rest_linear16_defaults_to_wav_and_aura_names_speak_with_the_default_voice(server, tts):
    # LiveKit's plugin sends its default model and no container; Deepgram answers WAV then.
    status, headers, body = post(server, f"model=aura-2-andromeda-en&encoding=linear16&sample_rate=24000"
                                         f"&mip_opt_out=false&seed={SEED}&max_tokens={TOKENS}")
    assert status == 200, body
    assert headers["content-type"] == "audio/wav" and headers["dg-model-name"] == "aura-2-andromeda-en"
    assert body[:4] == b"RIFF" and body[8:12] == b"WAVE" and body[36:40] == b"data"
    assert body[44:] == pcm16(expected(tts))


@pytest.mark.parametrize("encoding, content_type, decode", [
    ("mulaw", "audio/basic", g711.ulaw_decode),
    ("alaw", "audio/PCMA;rate=8000", g711.alaw_decode),
])
def test_rest_g711_at_8khz_decodes_to_the_same_signal(server, tts, encoding, content_type, decode):
    import soxr

    status, headers, body = post(server, f"{Q}&encoding={encoding}&sample_rate=8000&container=none")
    assert status == 200, body
    assert headers["content-type"] == content_type
    got = decode(body).astype(np.float64) / 32768.0
    want = soxr.resample(expected(tts), 24_000, 8_000).astype(np.float64)
    assert len(got) == len(want) == len(expected(tts)) // 3
    # G.711 keeps ~35 dB SNR on speech-level signals; 20 dB leaves room for quiet stretches.
    snr_db = 10 * np.log10(np.sum(want**2) / np.sum((got - want) ** 2))
    assert snr_db > 20, f"{encoding} audio is not the engine's signal (SNR {snr_db:.1f} dB)"


def test_rest_default_encoding_is_mp3_like_deepgram(server):
    status, headers, body = post(server, Q)
    assert status == 200, body
    assert headers["content-type"] == "audio/mpeg" and (body[:3] == b"ID3" or body[0] == 0xFF)


@pytest.mark.parametrize("query, body, headers, status, err_code, match", [
    (Q, None, {}, 401, "INVALID_AUTH", "API key"),
    (Q, None, {"Authorization": "Token wrong"}, 401, "INVALID_AUTH", "API key"),
    ("model=nope", None, None, 404, "VOICE_NOT_FOUND", "unknown voice id 'nope'"),
    ("model=aura-2-../x-en", None, None, 404, "VOICE_NOT_FOUND", "unknown voice id"),
    (f"{Q}&encoding=speex", None, None, 400, "UNSUPPORTED_FORMAT", "unsupported deepgram format 'speex'"),
    (f"{Q}&encoding=linear16&sample_rate=11025", None, None, 400, "UNSUPPORTED_FORMAT", "sample rate 11025"),
    (f"{Q}&sample_rate=fast", None, None, 400, "INVALID_VALUE", "sample_rate"),
    (f"{Q}&callback=https://example.com/hook", None, None, 400, "INVALID_VALUE", "callbacks are not supported"),
    (f"{Q}&max_tokens=401", None, None, 400, "INVALID_VALUE", "max_tokens must be <= 400"),
    (Q, b"not json", None, 400, "INVALID_JSON", "must be JSON"),
    (Q, {"text": "  "}, None, 400, "INVALID_VALUE", "non-empty text"),
    (Q, {"text": "ا" * 1001}, None, 400, "INPUT_TOO_LONG", "limit is 1000"),
])
def test_rest_errors_have_deepgrams_shape(server, app, query, body, headers, status, err_code, match):
    code, hdrs, raw = post(server, query, body, headers)
    assert code == status, raw
    err = json.loads(raw)
    assert set(err) == {"err_code", "err_msg", "request_id"}
    assert err["err_code"] == err_code and match in err["err_msg"] and err["request_id"]
    wait_released(app)


# -- WebSocket ----------------------------------------------------------------------------------


def ws_connect(server: str, query: str = Q, headers: dict | None = None):
    url = server.replace("http://", "ws://", 1) + f"/v1/speak?{query}"
    return ws_client.connect(url, additional_headers=AUTH if headers is None else headers, open_timeout=30)


def recv_json(ws, timeout: float = 60) -> dict:
    msg = ws.recv(timeout=timeout)
    assert isinstance(msg, str), f"expected a JSON message, got {len(msg)} bytes of audio"
    return json.loads(msg)


def recv_until(ws, kind: str, timeout: float = 60) -> tuple[bytes, list[dict]]:
    """(audio bytes, JSON messages) received up to and including the first message of type `kind`."""
    audio, msgs = bytearray(), []
    while True:
        msg = ws.recv(timeout=timeout)
        if isinstance(msg, bytes):
            audio += msg
            continue
        msgs.append(json.loads(msg))
        if msgs[-1]["type"] == kind:
            return bytes(audio), msgs


def opened(ws) -> dict:
    meta = recv_json(ws)
    assert meta["type"] == "Metadata" and meta["request_id"] and meta["model_name"] == "default"
    assert {"model_version", "model_uuid"} <= set(meta)
    return meta


def test_ws_speak_then_flush_streams_the_engine_audio_then_flushed(server, app, tts):
    wait_released(app)
    with ws_connect(server) as ws:
        opened(ws)
        ws.send(json.dumps({"type": "Speak", "text": TEXT}))
        ws.send(json.dumps({"type": "Flush"}))
        audio, msgs = recv_until(ws, "Flushed")
        assert msgs == [{"type": "Flushed", "sequence_id": 0}]
        assert audio == pcm16(expected(tts)), "WebSocket audio differs from TTS.stream with the same seed"


def test_ws_text_sent_during_a_flush_is_spoken_after_it_in_order(server, app, tts):
    wait_released(app)
    other = "أهلا وسهلا"
    with ws_connect(server) as ws:
        opened(ws)
        for text in (TEXT, other):  # the second arrives while the first is being spoken
            ws.send(json.dumps({"type": "Speak", "text": text}))
            ws.send(json.dumps({"type": "Flush"}))
        first, msgs1 = recv_until(ws, "Flushed")
        second, msgs2 = recv_until(ws, "Flushed")
    assert msgs1 == [{"type": "Flushed", "sequence_id": 0}] and msgs2 == [{"type": "Flushed", "sequence_id": 1}]
    assert first == pcm16(expected(tts, TEXT)) and second == pcm16(expected(tts, other)), "audio mixed or reordered"


def test_ws_complete_sentences_are_spoken_before_the_flush(server, app, tts):
    # Pipecat sends sentence after sentence and flushes only at the end of the reply.
    wait_released(app)
    with ws_connect(server) as ws:
        opened(ws)
        ws.send(json.dumps({"type": "Speak", "text": SENTENCE}))
        first = ws.recv(timeout=60)
        assert isinstance(first, bytes), f"expected audio before any Flush, got {first!r}"
        ws.send(json.dumps({"type": "Flush"}))
        rest, msgs = recv_until(ws, "Flushed")
    assert msgs == [{"type": "Flushed", "sequence_id": 0}]
    assert first + rest == pcm16(expected(tts, SENTENCE.strip()))


def test_ws_clear_stops_the_audio_then_confirms_and_the_socket_goes_on(server, app, tts):
    wait_released(app)
    with ws_connect(server) as ws:
        opened(ws)
        ws.send(json.dumps({"type": "Speak", "text": LONG}))
        ws.send(json.dumps({"type": "Flush"}))
        assert isinstance(ws.recv(timeout=60), bytes)
        ws.send(json.dumps({"type": "Clear"}))
        t0 = time.monotonic()
        before, msgs = recv_until(ws, "Cleared")  # audio already on its way may arrive before Cleared
        cleared_after = time.monotonic() - t0
        assert len(before) < 3 * TOKENS * SAMPLES_PER_TOKEN * 2, "Clear did not stop the stream (of ~12 phrases)"
        assert msgs == [{"type": "Cleared", "sequence_id": 1}], "the cleared text must not be Flushed"
        assert tts.pool.in_use == 0, "the cleared stream still holds its KV slot"
        ws.send(json.dumps({"type": "Speak", "text": TEXT}))
        ws.send(json.dumps({"type": "Flush"}))
        audio, msgs = recv_until(ws, "Flushed")
    assert msgs == [{"type": "Flushed", "sequence_id": 2}]
    assert audio == pcm16(expected(tts)), "audio of the cleared text arrived after Cleared"
    assert cleared_after < 5, f"Clear took {cleared_after:.1f} s"


def test_ws_bad_messages_get_warnings_and_the_socket_stays_usable(server, app, tts):
    wait_released(app)
    bad = [("not json", "INVALID_JSON"), (json.dumps([1, 2]), "UNKNOWN_MESSAGE_TYPE"),
           (json.dumps({"type": "Shout"}), "UNKNOWN_MESSAGE_TYPE"),
           (json.dumps({"type": "Speak", "text": 5}), "INVALID_VALUE"), (b"\x00\x01", "UNSUPPORTED_MESSAGE"),
           (json.dumps({"type": "Speak", "text": "ا" * 1001}), "INPUT_TOO_LONG")]
    with ws_connect(server) as ws:
        opened(ws)
        for msg, code in bad:
            ws.send(msg)
            warning = recv_json(ws)
            assert warning["type"] == "Warning" and warning["code"] == code and warning["description"], warning
        ws.send(json.dumps({"type": "Speak", "text": TEXT}))
        ws.send(json.dumps({"type": "Flush"}))
        audio, msgs = recv_until(ws, "Flushed")
    assert msgs == [{"type": "Flushed", "sequence_id": 0}] and audio == pcm16(expected(tts))


def test_ws_an_empty_flush_is_still_answered(server, app):
    # LiveKit waits for Flushed after every segment, even one that had no words.
    with ws_connect(server) as ws:
        opened(ws)
        ws.send(json.dumps({"type": "Flush"}))
        audio, msgs = recv_until(ws, "Flushed", timeout=10)
    assert audio == b"" and msgs == [{"type": "Flushed", "sequence_id": 0}]


def test_ws_close_finishes_what_was_sent_then_closes_normally(server, app, tts):
    wait_released(app)
    with ws_connect(server) as ws:
        opened(ws)
        for msg in ({"type": "Speak", "text": TEXT}, {"type": "Flush"}, {"type": "Close"}):
            ws.send(json.dumps(msg))
        audio, msgs = recv_until(ws, "Flushed")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert audio == pcm16(expected(tts)) and msgs == [{"type": "Flushed", "sequence_id": 0}]
    assert closed.value.rcvd.code == 1000


@pytest.mark.parametrize("headers, code", [({}, 1008), ({"Authorization": "Token wrong"}, 1008)])
def test_ws_needs_a_key(server, headers, code):
    with ws_connect(server, headers=headers) as ws:
        warning = recv_json(ws)
        assert warning["type"] == "Warning" and warning["code"] == "INVALID_API_KEY"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == code


def test_ws_accepts_a_bearer_key_and_mulaw_at_8khz(server, app, tts):
    wait_released(app)
    with ws_connect(server, f"{Q}&encoding=mulaw&sample_rate=8000", {"Authorization": f"Bearer {KEY}"}) as ws:
        opened(ws)
        ws.send(json.dumps({"type": "Speak", "text": TEXT}))
        ws.send(json.dumps({"type": "Flush"}))
        audio, _ = recv_until(ws, "Flushed")
    assert len(audio) == len(expected(tts)) // 3  # one byte per sample at a third of the rate


@pytest.mark.parametrize("query, match", [
    (f"{Q}&encoding=mp3", "encoding must be one of linear16, mulaw, alaw"),
    (f"{Q}&container=wav", "container must be none"),
    ("model=nope", "unknown voice id 'nope'"),
])
def test_ws_bad_query_is_a_warning_then_a_close(server, query, match):
    with ws_connect(server, query) as ws:
        warning = recv_json(ws)
        assert warning["type"] == "Warning" and match in warning["description"]
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1003


def test_ws_disconnect_mid_stream_frees_the_session_at_once(server, app, tts):
    wait_released(app)
    with ws_connect(server) as ws:
        opened(ws)
        ws.send(json.dumps({"type": "Speak", "text": LONG}))
        ws.send(json.dumps({"type": "Flush"}))
        assert isinstance(ws.recv(timeout=60), bytes) and app.state.ctx.live
        ws.socket.shutdown(socket.SHUT_RDWR)  # hang up without a close handshake, as a crashed client does
        wait_released(app, timeout=5)
