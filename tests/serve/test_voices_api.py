"""`/v1/voices` over a real loopback socket: list, upload (multipart), delete, limits, persistence.

One server (tiny checkpoint, a voice store in a temporary directory, an API key) serves the module.
Tests that register voices use their own ids so their order does not matter.
"""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sf = pytest.importorskip("soundfile")

from nutq.engine.sampling import SamplingParams  # noqa: E402
from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.audio_out import to_int16  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import get_json, http_request, running_server  # noqa: E402
from tests.serve.raw_clients import read_response_head, send_request_head, stalled_socket  # noqa: E402

KEY = "voices-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MAX_UPLOAD = 200_000  # bytes: a 4 s 24 kHz 16-bit WAV (192 kB) fits, 300 kB does not
CONFIG = ServeConfig(api_keys=(KEY,), max_upload_bytes=MAX_UPLOAD, min_voice_s=1.0, max_voice_s=4.0,
                     max_new_tokens=50, warmup=False)


def clip(seconds: float = 2.0, sr: int = 24_000, fmt: str = "WAV", seed: int = 0, amplitude: float = 0.2) -> bytes:
    """A harmonic tone with a little noise: decodable, not silent, different per seed."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * (120 + 10 * seed) * k * t) / k for k in range(1, 6))
    x = amplitude * (x / max(np.abs(x).max(), 1e-9) + 0.01 * np.random.default_rng(seed).standard_normal(t.size))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format=fmt)
    return buf.getvalue()


def multipart(file: bytes | None, filename: str = "clip.wav", **fields: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    if file is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + file + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("voice-store")


@pytest.fixture(scope="module")
def tts(tiny_checkpoint, store):
    return TTS.from_local(tiny_checkpoint, max_sessions=1, voice_store=store)


@pytest.fixture(scope="module")
def server(tts):
    with running_server(create_app(tts, CONFIG)) as url:
        yield url


def upload(server, file: bytes | None, headers: dict | None = None, **fields) -> tuple[int, dict]:
    body, ctype = multipart(file, **fields)
    headers = AUTH if headers is None else headers
    status, _, raw = http_request(server, "POST", "/v1/voices", body, {"Content-Type": ctype, **headers})
    return status, json.loads(raw)


def voice_ids(server) -> list[str]:
    status, doc = get_json(server, "/v1/voices", AUTH)
    assert status == 200 and doc["object"] == "list"
    return [v["id"] for v in doc["data"]]


def store_files(store) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in store.iterdir() if p.is_file()}


def test_the_builtin_voice_is_listed_first_and_a_key_is_required(server):
    status, doc = get_json(server, "/v1/voices", AUTH)
    assert status == 200
    first = doc["data"][0]
    assert first["id"] == "default" and first["source"] == "builtin" and first["clip_sha256"] is None
    assert get_json(server, "/v1/voices")[0] == 401
    assert upload(server, clip(), headers={})[0] == 401


def test_an_uploaded_voice_is_listed_and_speaks_like_the_same_clip_in_process(server, tts):
    data = clip(seed=1)
    status, voice = upload(server, data, exaggeration="0.7")
    assert status == 201, voice
    assert voice["id"].startswith("v-") and voice["source"] == "registered"
    assert voice["exaggeration"] == 0.7 and voice["clip_seconds"] == pytest.approx(2.0)
    assert voice["id"] in voice_ids(server)
    # the same clip again: the same voice, nothing new created
    again_status, again = upload(server, data, exaggeration="0.7")
    assert (again_status, again["id"]) == (200, voice["id"])

    body = {"model": "nutq", "input": "مرحبا", "voice": voice["id"], "response_format": "pcm", "seed": 4,
            "max_tokens": 8}
    status, _, audio = http_request(server, "POST", "/v1/audio/speech", json.dumps(body),
                                    {"Content-Type": "application/json", **AUTH})
    assert status == 200
    want = np.concatenate([c.audio for c in tts.stream("مرحبا", tts.voices.get(voice["id"]), "ar",
                                                       params=SamplingParams(max_new_tokens=8), seed=4)])
    assert audio == to_int16(want).tobytes(), "the server did not speak with the uploaded voice"


@pytest.mark.parametrize("fmt", ["FLAC", "OGG", "MP3"])
def test_flac_ogg_and_mp3_clips_are_accepted(server, fmt):
    vid = f"fmt-{fmt.lower()}"
    status, voice = upload(server, clip(seed=2, fmt=fmt), filename=f"c.{fmt.lower()}", id=vid)
    assert status == 201, voice
    assert voice["id"] == vid and voice["clip_seconds"] == pytest.approx(2.0, abs=0.1)


@pytest.mark.parametrize("make, fields, status, code, match", [
    (lambda: b"not audio at all", {}, 400, "invalid_audio", "cannot read the clip"),
    (lambda: b"", {}, 400, "invalid_audio", "empty"),
    (lambda: clip(fmt="AIFF"), {}, 400, "unsupported_audio_format", "AIFF is not accepted"),
    (lambda: clip(seconds=0.5), {}, 400, "invalid_audio_duration", "0.50 s long"),
    (lambda: clip(seconds=5.0, sr=8000), {}, 400, "invalid_audio_duration", "5.00 s long; voices need 1 to 4 s"),
    (lambda: clip(amplitude=0.0), {}, 400, "invalid_audio", "silent"),
    (lambda: clip(seconds=2.0, sr=48_000) * 2, {}, 413, "upload_too_large", "limit of 200000 bytes"),
    (lambda: clip(), {"id": "../../etc/passwd"}, 400, "invalid_value", "invalid voice id"),
    (lambda: clip(), {"id": "default"}, 409, "voice_exists", "built-in"),
    (lambda: clip(), {"exaggeration": "3"}, 400, "invalid_value", "from 0 to 2"),
    (lambda: clip(), {"exaggeration": "nan"}, 400, "invalid_value", "from 0 to 2"),
    (lambda: clip(), {"name": "Alice"}, 400, "invalid_value", "unknown form field(s) name"),
    (lambda: None, {"id": "nofile"}, 400, "invalid_value", "missing the 'file' field"),
])
def test_bad_uploads_are_refused_with_a_reason_and_store_nothing(server, store, make, fields, status, code, match):
    before_ids, before_files = voice_ids(server), store_files(store)
    got, doc = upload(server, make(), **fields)
    assert got == status, doc
    assert doc["error"]["code"] == code and match in doc["error"]["message"], doc
    assert voice_ids(server) == before_ids
    assert store_files(store) == before_files, "a refused upload changed the voice store"


def test_uploads_must_be_multipart_and_the_size_limit_holds_without_content_length(server):
    status, _, raw = http_request(server, "POST", "/v1/voices", clip(), {"Content-Type": "audio/wav", **AUTH})
    assert status == 400 and "multipart/form-data" in json.loads(raw)["error"]["message"]
    # chunked: no Content-Length to refuse early, the body itself is cut off at the limit (and the
    # connection closed: the rest is never read)
    # Just past the limit (the upload's plus 16 KiB for the framing): a client that sent much more
    # than the server read could lose the answer to the reset that closing an unread socket sends.
    body, ctype = multipart(b"\0" * (MAX_UPLOAD + 20 * 1024))
    with stalled_socket(server) as sock:
        send_request_head(sock, "POST", "/v1/voices", {"Content-Type": ctype, "Transfer-Encoding": "chunked", **AUTH})
        try:
            for i in range(0, len(body), 8192):
                piece = body[i:i + 8192]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        except OSError:  # refused and closed while we were still sending
            pass
        status, _, rest = read_response_head(sock)
    assert status == 413 and b"upload_too_large" in rest


def test_an_explicit_id_is_not_overwritten(server):
    assert upload(server, clip(seed=3), id="taken")[0] == 201
    status, doc = upload(server, clip(seed=4), id="taken")
    assert status == 409 and doc["error"]["code"] == "voice_exists"


def test_delete_removes_a_voice_but_never_the_builtin(server):
    assert upload(server, clip(seed=5), id="short-lived")[0] == 201
    status, _, raw = http_request(server, "DELETE", "/v1/voices/short-lived", headers=AUTH)
    assert (status, json.loads(raw)) == (200, {"id": "short-lived", "object": "voice", "deleted": True})
    assert "short-lived" not in voice_ids(server)
    status, _, raw = http_request(server, "DELETE", "/v1/voices/short-lived", headers=AUTH)
    assert status == 404 and json.loads(raw)["error"]["code"] == "voice_not_found"
    status, _, raw = http_request(server, "DELETE", "/v1/voices/default", headers=AUTH)
    assert status == 409 and json.loads(raw)["error"]["code"] == "voice_builtin"
    assert http_request(server, "DELETE", "/v1/voices/taken")[0] == 401


def test_voices_persist_for_a_new_server_on_the_same_store(server, tiny_checkpoint, store):
    assert upload(server, clip(seed=6), id="keeper")[0] == 201
    listed = {v["id"]: v for v in get_json(server, "/v1/voices", AUTH)[1]["data"]}
    fresh = TTS.from_local(tiny_checkpoint, max_sessions=1, voice_store=store)
    with running_server(create_app(fresh, CONFIG)) as url:
        again = {v["id"]: v for v in get_json(url, "/v1/voices", AUTH)[1]["data"]}
    assert again.keys() == listed.keys() and "keeper" in again
    assert again["keeper"]["clip_sha256"] == listed["keeper"]["clip_sha256"]
