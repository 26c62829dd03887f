"""`POST /v1/audio/speech` over a real loopback socket, driven by the official `openai` SDK.

One uvicorn server (tiny random checkpoint, one KV slot, a registered voice `narrator` aliased as
`alloy`) serves the module. Audio is checked against `TTS.stream` run in-process with the same
seed and settings: the server must add nothing but encoding.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import socket
import subprocess
import time
import typing

import numpy as np
import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

from nutq.engine.sampling import SamplingParams  # noqa: E402
from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.audio_out import to_int16  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.serve.voice_names import OPENAI_VOICES  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import connect, get_json, running_server  # noqa: E402

KEY = "test-key"
TEXT = "مرحبا بكم"
LONG = "مرحبا بكم. هذا نص طويل، فيه عدة جمل. هل تسمعني جيدا؟ نعم أسمعك."
TOKENS = 12  # per phrase: short outputs keep the module fast
SAMPLES_PER_TOKEN = 960  # 24 kHz / 25 tokens per second


def reference_clip() -> bytes:
    import soundfile as sf

    t = np.arange(48_000) / 24_000
    x = 0.2 * sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 6)) / 2.3
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), 24_000, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    tts = TTS.from_local(tiny_checkpoint, max_sessions=1, max_queue=0)  # one stream at a time: a second gets 429
    tts.voices.add(reference_clip(), "narrator")
    return tts


@pytest.fixture(scope="module")
def server(tts):
    """Base URL of a uvicorn server in a thread, ready (warmup done)."""
    app = create_app(tts, ServeConfig(api_keys=(KEY,), max_new_tokens=400, max_input_chars=500,
                                      voice_aliases={"alloy": "narrator"}))
    with running_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0, timeout=120)


def expected_audio(tts, text: str, seed: int, tokens: int = TOKENS, voice: str = "default") -> np.ndarray:
    """What the server should send, made in-process: the same text, voice, settings and seed."""
    chunks = tts.stream(text, tts.voices.get(voice), "ar", params=SamplingParams(max_new_tokens=tokens), seed=seed)
    return np.concatenate([c.audio for c in chunks])


def speak(client, fmt: str, seed: int, text: str = TEXT, voice="default", **extra) -> tuple[bytes, str]:
    with client.audio.speech.with_streaming_response.create(
            model="nutq", voice=voice, input=text, response_format=fmt,
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
    ({"voice": "alloy2"}, 404, "voice", "unknown voice id 'alloy2'"),
    ({"voice": {"id": "nobody"}}, 404, "voice", "unknown voice id 'nobody'"),
    ({"voice": ""}, 400, "voice", "must not be empty"),
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
    with pytest.raises(openai.NotFoundError, match="unknown voice id 'narrator2'"):
        client.audio.speech.create(model="nutq", voice="narrator2", input=TEXT)
    with pytest.raises(openai.BadRequestError, match="only speed 1.0"):
        client.audio.speech.create(model="nutq", voice="default", input=TEXT, speed=2.0)


def test_api_key_is_required_and_the_401_names_every_accepted_form(server):
    body = {"model": "nutq", "input": TEXT, "voice": "default", "response_format": "pcm", "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        code, raw = post(server, body, headers)
        err = json.loads(raw)["error"]
        assert code == 401 and err["code"] == "invalid_api_key", headers
    # The message names header forms like `Authorization: Bearer <key>`; each one it names must work.
    named = re.findall(r"([A-Za-z-]+): ((?:\w+ )?)<key>", err["message"])
    assert {h.lower() for h, _ in named} == {"authorization", "xi-api-key"} and len(named) == 3, err["message"]
    for header, scheme in named:
        assert post(server, body, {header: f"{scheme}{KEY}"})[0] == 200, (header, scheme)


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


def sdk_voice_names() -> set[str]:
    """The built-in voice names the installed `openai` SDK offers (its `voice` Literal)."""
    from openai.types.audio.speech_create_params import SpeechCreateParams

    hints = typing.get_type_hints(SpeechCreateParams, include_extras=True)
    found, todo = set(), [hints["voice"]]
    while todo:  # unwrap Required[...] and Union[...] down to the Literal
        t = todo.pop()
        if typing.get_origin(t) is typing.Literal:
            found |= set(typing.get_args(t))
        else:
            todo += [a for a in typing.get_args(t) if not isinstance(a, str)]
    return found


def test_every_openai_voice_name_of_the_sdk_is_known():
    names = sdk_voice_names()
    assert {"alloy", "ash", "nova"} <= names, names
    assert names <= OPENAI_VOICES, f"OpenAI voices nutq does not map: {sorted(names - OPENAI_VOICES)}"


@pytest.mark.parametrize("name", sorted(OPENAI_VOICES))
def test_openai_voice_names_speak_with_the_configured_voices(client, tts, name):
    # Stock clients send these (LiveKit: ash, Pipecat: alloy). Unaliased: the default voice.
    target = "narrator" if name == "alloy" else "default"
    body, _ = speak(client, "pcm", seed=8, voice=name, max_tokens=4)
    assert body == to_int16(expected_audio(tts, TEXT, seed=8, tokens=4, voice=target)).tobytes(), target


def test_alias_and_voice_object_pick_the_registered_voice(client, tts):
    narrator = to_int16(expected_audio(tts, TEXT, seed=9, tokens=4, voice="narrator")).tobytes()
    assert narrator != to_int16(expected_audio(tts, TEXT, seed=9, tokens=4)).tobytes(), "the voices must differ"
    assert speak(client, "pcm", seed=9, voice="alloy", max_tokens=4)[0] == narrator
    assert speak(client, "pcm", seed=9, voice={"id": "narrator"}, max_tokens=4)[0] == narrator


def test_an_alias_of_no_voice_is_refused_when_the_app_is_made(tts):
    with pytest.raises(ValueError, match="voice alias alloy=narator: there is no voice 'narator'"):
        create_app(tts, ServeConfig(voice_aliases={"alloy": "narator"}))


def test_streamed_flac_is_a_complete_file_that_soundfile_pyav_and_ffprobe_read(client, tts):
    import soundfile as sf

    want = to_int16(expected_audio(tts, LONG, seed=4, tokens=6))
    with client.audio.speech.with_streaming_response.create(
            model="nutq", voice="default", input=LONG, response_format="flac",
            extra_body={"seed": 4, "language": "ar", "max_tokens": 6}) as resp:
        pieces = list(resp.iter_bytes())
    flac = b"".join(pieces)
    got, sr = sf.read(io.BytesIO(flac), dtype="int16")
    assert sr == 24_000 and np.array_equal(got, want), "soundfile must read the whole stream, sample exact"
    with sf.SoundFile(io.BytesIO(flac)) as f:
        assert f.frames == len(want), "STREAMINFO must give the total sample count"
    assert np.array_equal(decode(flac)[0], want)
    if shutil.which("ffprobe"):
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=duration_ts,sample_rate",
                                "-of", "json", "-i", "pipe:0"], input=flac, capture_output=True, check=True)
        stream = json.loads(probe.stdout)["streams"][0]
        assert int(stream["duration_ts"]) == len(want) and stream["sample_rate"] == "24000"
