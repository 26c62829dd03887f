"""`POST /v1/audio/speech` over a real loopback socket, driven by the official `openai` SDK.

One uvicorn server (tiny random checkpoint, one KV slot) serves the module. Audio is checked
against `TTS.stream` run in-process with the same seed and settings: the server must add nothing
but encoding.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from nutq.engine.sampling import SamplingParams  # noqa: E402
from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.audio_out import to_int16  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import connect, get_json, running_server  # noqa: E402

KEY = "test-key"
TEXT = "مرحبا بكم"
LONG = "مرحبا بكم. هذا نص طويل، فيه عدة جمل. هل تسمعني جيدا؟ نعم أسمعك."
TOKENS = 12  # per phrase: short outputs keep the module fast
SAMPLES_PER_TOKEN = 960  # 24 kHz / 25 tokens per second


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint, max_sessions=1)


@pytest.fixture(scope="module")
def server(tts):
    """Base URL of a uvicorn server in a thread, ready (warmup done)."""
    app = create_app(tts, ServeConfig(api_keys=(KEY,), max_new_tokens=400, max_input_chars=500))
    with running_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


def expected_audio(tts, text: str, seed: int, tokens: int = TOKENS) -> np.ndarray:
    """What the server should send, made in-process: the same text, voice, settings and seed."""
    chunks = tts.stream(text, tts.voices.get("default"), "ar", params=SamplingParams(max_new_tokens=tokens), seed=seed)
    return np.concatenate([c.audio for c in chunks])


def speak(client, fmt: str, seed: int, text: str = TEXT, **extra) -> tuple[bytes, str]:
    with client.audio.speech.with_streaming_response.create(
            model="nutq", voice="default", input=text, response_format=fmt,
            extra_body={"seed": seed, "language": "ar", "max_tokens": TOKENS, **extra}) as resp:
        return b"".join(resp.iter_bytes()), resp.headers["content-type"]


def get(url: str, path: str) -> tuple[int, dict]:
    return get_json(url, path)


def post(server, body: dict, headers: dict | None = None) -> tuple[int, bytes]:
    """(status, body) of a plain POST /v1/audio/speech (the bearer key unless `headers` is given)."""
    conn = connect(server)
    try:
        conn.request("POST", "/v1/audio/speech", json.dumps(body),
                     {"Content-Type": "application/json",
                      **({"Authorization": f"Bearer {KEY}"} if headers is None else headers)})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_health_and_readiness_need_no_key(server):
    assert get(server, "/healthz") == (200, {"status": "ok"})
    assert get(server, "/readyz") == (200, {"status": "ready"})


def test_pcm_stream_is_exactly_the_engine_audio(client, tts):
    body, ctype = speak(client, "pcm", seed=3)
    want = to_int16(expected_audio(tts, TEXT, seed=3)).tobytes()
    assert ctype == "audio/pcm;rate=24000"
    assert len(body) == len(want) and len(want) % (2 * SAMPLES_PER_TOKEN) == 0
    assert body == want, "the served PCM differs from TTS.stream with the same seed and settings"


def decode(body: bytes) -> tuple[np.ndarray, int]:
    """All samples of a compressed stream (PyAV: streams of unknown length are fine) and its rate."""
    import av

    with av.open(io.BytesIO(body)) as f:
        frames = [fr.to_ndarray().reshape(-1) for fr in f.decode(audio=0)]
        return np.concatenate(frames), f.streams.audio[0].rate


def test_wav_and_flac_decode_to_the_same_samples(client, tts):
    want = to_int16(expected_audio(tts, TEXT, seed=5))
    wav, wav_type = speak(client, "wav", seed=5)
    assert wav_type == "audio/wav" and wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    assert np.array_equal(np.frombuffer(wav[44:], "<i2"), want)
    flac, flac_type = speak(client, "flac", seed=5)
    assert flac_type == "audio/flac"
    got, sr = decode(flac)
    assert sr == 24_000 and got.dtype == np.int16 and np.array_equal(got, want), "FLAC is lossless: samples must match exactly"


def test_mp3_is_valid_and_about_the_right_length(client, tts):
    body, ctype = speak(client, "mp3", seed=6)
    n_want = len(expected_audio(tts, TEXT, seed=6))
    got, sr = decode(body)
    n_got = len(got)
    assert ctype == "audio/mpeg" and sr == 24_000
    # LAME pads the start (encoder delay) and the last frame: at most ~2 frames of 1152 samples extra
    assert n_want <= n_got <= n_want + 2 * 1152 + 576


def test_sse_events_carry_the_audio_and_usage(client, tts):
    with client.audio.speech.with_streaming_response.create(
            model="nutq", voice="default", input=TEXT, response_format="pcm", stream_format="sse",
            extra_body={"seed": 3, "max_tokens": TOKENS}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[len("data: "):]) for line in resp.iter_lines() if line.startswith("data: ")]
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1) and len(events) >= 2
    audio = b"".join(base64.b64decode(e["audio"]) for e in events[:-1])
    assert audio == to_int16(expected_audio(tts, TEXT, seed=3)).tobytes()
    done = events[-1]
    assert done["type"] == "speech.audio.done"
    assert done["usage"]["output_tokens"] * SAMPLES_PER_TOKEN * 2 == len(audio)
    assert done["usage"]["total_tokens"] == done["usage"]["input_tokens"] + done["usage"]["output_tokens"]


@pytest.mark.parametrize("change, status, param, match", [
    ({"input": ""}, 400, "input", "at least 1 character"),
    ({"input": "ا" * 501}, 400, "input", "limit is 500"),
    ({"input": " ... "}, 400, None, "nothing to say"),
    ({"response_format": "ogg"}, 400, "response_format", "unsupported openai format 'ogg'"),
    ({"response_format": "pcm", "sample_rate": 11025}, 400, "response_format", "sample rate 11025"),
    ({"voice": "alloy"}, 404, "voice", "unknown voice id 'alloy'"),
    ({"voice": "../../etc/passwd"}, 404, "voice", "unknown voice id"),
    ({"speed": 1.5}, 400, "speed", "only speed 1.0"),
    ({"language": "xx"}, 400, None, "unsupported language 'xx'"),
    ({"max_tokens": 401}, 400, "max_tokens", "<= 400"),
    ({"temperature": 0}, 400, "temperature", "greater than 0"),
    ({"instructions": "whisper"}, 400, "instructions", "not supported"),
    ({"stream_format": "json"}, 400, "stream_format", "'audio' or 'sse'"),
    ({"voice_id": "default"}, 400, "voice_id", "Extra inputs are not permitted"),
])
def test_bad_requests_get_clear_openai_errors(server, tts, change, status, param, match):
    body = {"model": "nutq", "input": TEXT, "voice": "default", "response_format": "pcm", "max_tokens": 2, **change}
    code, raw = post(server, body)
    assert code == status, raw
    err = json.loads(raw)["error"]
    assert match in err["message"] and err["param"] == param and err["type"] == "invalid_request_error"
    assert tts.pool.in_use == 0


def test_sdk_raises_typed_errors(client):
    with pytest.raises(openai.NotFoundError, match="unknown voice id 'alloy'"):
        client.audio.speech.create(model="nutq", voice="alloy", input=TEXT)
    with pytest.raises(openai.BadRequestError, match="only speed 1.0"):
        client.audio.speech.create(model="nutq", voice="default", input=TEXT, speed=2.0)


def test_api_key_is_required_and_accepted_in_three_spellings(server):
    body = {"model": "nutq", "input": TEXT, "voice": "default", "response_format": "pcm", "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        code, raw = post(server, body, headers)
        assert code == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key", headers
    for headers in ({"Authorization": f"Token {KEY}"}, {"xi-api-key": KEY}):
        assert post(server, body, headers)[0] == 200, headers


def test_busy_server_answers_429_with_retry_hint(client, server, tts):
    slots = [tts.pool.lease() for _ in range(tts.pool.slots)]
    try:
        with pytest.raises(openai.RateLimitError, match="server busy") as e:
            client.audio.speech.create(model="nutq", voice="default", input=TEXT, extra_body={"max_tokens": 2})
        assert e.value.response.headers["retry-after"] == "1"
    finally:
        for s in slots:
            s.release()
    assert post(server, {"model": "nutq", "input": TEXT, "voice": "default", "max_tokens": 2})[0] == 200


def test_client_disconnect_frees_the_session_at_once(server, tts):
    # Uncancelled, this request runs ~4 phrases x 400 tokens (tens of seconds on CPU).
    body = {"model": "nutq", "input": LONG, "voice": "default", "response_format": "pcm", "max_tokens": 400}
    conn = connect(server)
    conn.request("POST", "/v1/audio/speech", json.dumps(body),
                 {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    r = conn.getresponse()
    assert r.status == 200 and r.read1(4096) and tts.pool.in_use == 1
    conn.sock.shutdown(socket.SHUT_RDWR)  # hang up mid-stream, as a client that went away does
    conn.close()
    t0 = time.monotonic()
    while tts.pool.in_use and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    assert tts.pool.in_use == 0, "the KV slot was not freed within 5 s of the client disconnecting"
