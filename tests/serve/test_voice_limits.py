"""Voice uploads under attack (issue 15, points 2, 6, 7, 8) over a real loopback socket: clips
that would decode to far more audio than their size (channels, sample rate, decoded samples),
clips too thin to be a voice, cheap checks before any decoding, bounded concurrent uploads, voice
quotas per key and in total, a full disk, pagination, and what a crash leaves in the store.
"""

from __future__ import annotations

import errno
import io
import json
import logging

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
sf = pytest.importorskip("soundfile")

from nutq.engine import voice_index as voice_index_module  # noqa: E402
from nutq.engine.voice_cache import VoiceCache  # noqa: E402
from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import get_json, http_request, running_server  # noqa: E402
from tests.serve.raw_clients import send_request_head, stalled_socket  # noqa: E402
from tests.serve.test_voices_api import clip, multipart  # noqa: E402

KEY_A, KEY_B = "voices-a", "voices-b"
MAX_SAMPLES = 4 * 48_000  # decoded samples, all channels
CONFIG = ServeConfig(api_keys=(KEY_A, KEY_B), warmup=False, max_upload_bytes=400_000, min_voice_s=1.0,
                     max_voice_s=4.0, max_voice_samples=MAX_SAMPLES, max_concurrent_uploads=1, max_voices=3,
                     max_voices_per_key=2)


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


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def upload(url, file: bytes, key: str = KEY_A, **fields) -> tuple[int, dict]:
    body, ctype = multipart(file, **fields)
    status, _, raw = http_request(url, "POST", "/v1/voices", body, {"Content-Type": ctype, **auth(key)})
    return status, json.loads(raw)


def tone(seconds: float, sr: int, channels: int = 1, fmt: str = "FLAC") -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.2 * np.sin(2 * np.pi * 150 * t)
    buf = io.BytesIO()
    sf.write(buf, np.repeat(x[:, None], channels, axis=1).astype(np.float32), sr, format=fmt)
    return buf.getvalue()


def registered(url, key: str = KEY_A) -> list[str]:
    ids, after = [], None
    while True:
        status, doc = get_json(url, "/v1/voices?limit=2" + (f"&after={after}" if after else ""), auth(key))
        assert status == 200 and len(doc["data"]) <= 2
        ids += [v["id"] for v in doc["data"]]
        if not doc["has_more"]:
            return [i for i in ids if i != "default"]
        after = doc["last_id"]


def store_files(store) -> set[str]:
    return {p.name for p in store.iterdir()}


@pytest.mark.parametrize("make,code", [
    (lambda: tone(2.0, 48_000, channels=8), "unsupported_audio_channels"),  # 8 channels, as the bomb had
    (lambda: tone(2.0, 655_350), "unsupported_sample_rate"),  # the bomb's rate: 27 times 24 kHz
    (lambda: tone(3.0, 48_000, channels=2), "audio_too_large"),  # 288,000 samples decoded > 192,000
    (lambda: tone(3.0, 1, fmt="WAV"), "unsupported_sample_rate"),  # 3 samples "lasting" 3 s
], ids=["channels", "rate", "decoded-size", "1-hz"])
def test_clips_that_decode_to_too_much_or_too_little_are_refused_from_their_header(server, store, make, code):
    before = store_files(store)
    status, doc = upload(server, make())
    assert status == 400 and doc["error"]["code"] == code, doc
    assert store_files(store) == before


def test_a_taken_id_is_refused_before_the_clip_is_decoded(server):
    assert upload(server, clip(seed=11), id="taken-early")[0] == 201
    # not audio at all: decoding would answer 400; the id is checked first
    status, doc = upload(server, b"\0" * 1000, id="taken-early")
    assert status == 409 and doc["error"]["code"] == "voice_exists"
    assert http_request(server, "DELETE", "/v1/voices/taken-early", headers=auth(KEY_A))[0] == 200


def test_uploads_in_progress_are_bounded(server):
    body, ctype = multipart(clip(seed=12))
    with stalled_socket(server) as slow:  # one upload that never finishes sending its body
        send_request_head(slow, "POST", "/v1/voices", {"Content-Type": ctype, "Content-Length": str(len(body)),
                                                       **auth(KEY_A)})
        slow.sendall(body[:100])
        for _ in range(200):  # until the server is reading it
            status, doc = upload(server, clip(seed=13), key=KEY_B, id="while-slow")
            if status == 429:
                break
            if status == 201:  # in before the slow one: leave the store as the other tests expect it
                assert http_request(server, "DELETE", "/v1/voices/while-slow", headers=auth(KEY_B))[0] == 200
        assert status == 429 and doc["error"]["code"] == "too_many_uploads", doc
    for _ in range(200):  # the abandoned upload lets go of its place
        status, doc = upload(server, clip(seed=13), key=KEY_B, id="after-slow")
        if status != 429:
            break
    assert status == 201, doc
    assert http_request(server, "DELETE", "/v1/voices/after-slow", headers=auth(KEY_A))[0] == 200


def test_voice_quotas_per_key_and_in_total_and_pagination(server):
    assert registered(server) == []
    for i in range(2):
        assert upload(server, clip(seed=20 + i), key=KEY_A, id=f"a{i}")[0] == 201
    status, doc = upload(server, clip(seed=22), key=KEY_A, id="a2")
    assert status == 403 and doc["error"]["code"] == "voice_quota_exceeded" and "this client" in doc["error"]["message"]
    assert upload(server, clip(seed=23), key=KEY_B, id="b0")[0] == 201
    status, doc = upload(server, clip(seed=24), key=KEY_B, id="b1")  # B's own quota has room, the server's not
    assert status == 403 and doc["error"]["code"] == "voice_quota_exceeded" and "server" in doc["error"]["message"]
    assert registered(server) == ["a0", "a1", "b0"]  # three pages of two, in id order
    for vid in ("a0", "a1", "b0"):
        assert http_request(server, "DELETE", f"/v1/voices/{vid}", headers=auth(KEY_A))[0] == 200


def test_a_full_disk_is_a_507_and_stores_nothing(server, store, monkeypatch):
    def no_space(*_, **__):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = store_files(store)
    monkeypatch.setattr(voice_index_module.os, "fsync", no_space)  # every fsync fails, as on a full disk
    status, doc = upload(server, clip(seed=30), id="no-room")
    assert status == 507 and doc["error"]["code"] == "insufficient_storage", doc
    assert "no-room" not in registered(server) and store_files(store) == before
    monkeypatch.undo()
    assert upload(server, clip(seed=30), id="no-room")[0] == 201  # nothing half-registered in the way
    assert http_request(server, "DELETE", "/v1/voices/no-room", headers=auth(KEY_A))[0] == 200


def test_echoed_values_are_cut_short(server):
    body = {"model": "nutq", "input": "مرحبا", "voice": "v" * 100_000, "response_format": "pcm"}
    status, _, raw = http_request(server, "POST", "/v1/audio/speech", json.dumps(body),
                                  {"Content-Type": "application/json", **auth(KEY_A)})
    assert status == 404 and len(raw) < 1000


def test_a_crash_s_leftovers_are_removed_at_startup(tts, tmp_path, caplog):
    cache = VoiceCache(tts.prepare_voice, store_dir=tmp_path, model=tts.model_id)
    vid = cache.add(clip(seed=40), "kept")
    kept = store_files(tmp_path)
    voice_file = next(n for n in kept if n.endswith(".safetensors"))
    # what kill -9 in the middle of writes leaves: temporary files, a voice file with no index entry
    (tmp_path / ".index.json.x1y2.tmp").write_bytes(b"{")
    (tmp_path / f".{voice_file}.z3.tmp").write_bytes(b"partial")
    (tmp_path / ("ab" * 32 + ".safetensors")).write_bytes((tmp_path / voice_file).read_bytes())
    with caplog.at_level(logging.WARNING, logger="nutq.engine.voice_cache"):
        again = VoiceCache(tts.prepare_voice, store_dir=tmp_path, model=tts.model_id)
    voice_files = lambda names: {n for n in names if not n.startswith("index.")}  # noqa: E731 (the index is refolded)
    assert voice_files(store_files(tmp_path)) == voice_files(kept)
    assert [v.id for v in again.list()] == [vid]
    assert sum("removed" in r.getMessage() for r in caplog.records) == 3
