"""VoiceCache: by id and by clip content, LRU by bytes, persistence, invalidation, threads, safe ids."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from nutq.engine.voice import Voice, VoiceError
from nutq.engine.voice_cache import DEFAULT_VOICE_ID, UnknownVoiceError, VoiceCache
from nutq.engine.voice_format import voice_nbytes
from test_voice_format import assert_same_voice, fake_voice

VOICE_BYTES = voice_nbytes(fake_voice())


class FakePrepare:
    """A deterministic voice per clip (seeded by the clip's hash), counting calls; b"bad" is refused."""

    def __init__(self, delay: float = 0.0):
        self.calls: list[bytes] = []
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, clip: bytes) -> Voice:
        with self._lock:
            self.calls.append(clip)
        time.sleep(self.delay)
        if clip == b"bad":
            raise VoiceError("reference audio is silent")
        return fake_voice(int.from_bytes(hashlib.sha256(clip).digest()[:4], "little"), exaggeration=0.5)


def expected(clip: bytes, exaggeration: float = 0.5) -> Voice:
    return FakePrepare()(clip).with_exaggeration(exaggeration)


def test_same_clip_is_prepared_once_whatever_the_id():
    prep = FakePrepare()
    cache = VoiceCache(prep, max_bytes=10 * VOICE_BYTES)
    assert cache.add(b"clip-1", "alice", exaggeration=0.3) == "alice"
    assert cache.add(b"clip-1", "bob", exaggeration=0.9) == "bob"
    assert_same_voice(cache.get("alice"), expected(b"clip-1", 0.3))
    assert cache.get("bob").exaggeration == 0.9  # each id keeps its own exaggeration
    assert_same_voice(cache.get_by_clip(b"clip-1", exaggeration=0.4), expected(b"clip-1", 0.4))
    assert len(prep.calls) == 1
    s = cache.stats
    assert (s.misses, s.hits, s.prepares, s.voices) == (1, 4, 1, 2)


def test_generated_ids_are_stable_per_clip():
    cache = VoiceCache(FakePrepare(), max_bytes=10 * VOICE_BYTES)
    vid = cache.add(b"clip-1")
    assert vid == cache.add(b"clip-1") and vid != cache.add(b"clip-2")
    assert [i.id for i in cache.list()] == sorted([vid, cache.add(b"clip-2")])


def test_lru_evicts_least_recently_used_by_bytes_and_reloads_from_the_store(tmp_path):
    prep = FakePrepare()
    cache = VoiceCache(prep, store_dir=tmp_path, max_bytes=int(2.5 * VOICE_BYTES))
    for i in range(2):
        cache.add(f"clip-{i}".encode(), f"v{i}")
    cache.get("v0")  # v1 is now the least recently used
    cache.add(b"clip-2", "v2")
    assert cache.stats.evictions == 1 and cache.stats.memory_bytes == 2 * VOICE_BYTES
    assert {i.id: i.in_memory for i in cache.list()} == {"v0": True, "v1": False, "v2": True}
    assert_same_voice(cache.get("v1"), expected(b"clip-1"))  # back from disk, not prepared again
    assert len(prep.calls) == 3 and cache.stats.disk_loads == 1 and cache.stats.evictions == 2


def test_without_a_store_evicted_voices_are_forgotten():
    cache = VoiceCache(FakePrepare(), max_bytes=VOICE_BYTES)
    cache.add(b"clip-0", "v0")
    cache.add(b"clip-1", "v1")
    with pytest.raises(UnknownVoiceError, match="unknown voice id 'v0'"):
        cache.get("v0")
    assert [i.id for i in cache.list()] == ["v1"]


def test_a_new_instance_reloads_the_store_without_preparing(tmp_path):
    first = VoiceCache(FakePrepare(), store_dir=tmp_path, model="m1")
    first.add(b"clip-a", "a", exaggeration=0.8)
    first.add(b"clip-b", "b")
    prep = FakePrepare()
    second = VoiceCache(prep, store_dir=tmp_path, model="m1")
    assert [(i.id, i.clip_sha256) for i in second.list()] == [(i.id, i.clip_sha256) for i in first.list()]
    assert_same_voice(second.get("a"), expected(b"clip-a", 0.8))
    assert prep.calls == [] and second.stats.disk_loads == 1
    assert_same_voice(second.get_by_clip(b"clip-b"), expected(b"clip-b"))  # by content, from disk too
    assert prep.calls == []


def test_reregistering_an_id_with_another_clip_replaces_it(tmp_path):
    cache = VoiceCache(FakePrepare(), store_dir=tmp_path)
    cache.add(b"old", "x")
    cache.add(b"new", "x")
    assert_same_voice(cache.get("x"), expected(b"new"))
    stored = {p.name for p in tmp_path.glob("*.safetensors")}
    assert stored == {hashlib.sha256(b"new").hexdigest() + ".safetensors"}  # the old file is gone


def test_a_voice_from_a_file_follows_changes_to_the_file(tmp_path):
    prep = FakePrepare()
    cache = VoiceCache(prep, max_bytes=10 * VOICE_BYTES)
    clip = tmp_path / "ref.wav"
    clip.write_bytes(b"version-1")
    cache.add(clip, "narrator")
    assert_same_voice(cache.get("narrator"), expected(b"version-1"))
    st = clip.stat()
    os.utime(clip, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes: no new preparation
    cache.get("narrator")
    assert len(prep.calls) == 1
    clip.write_bytes(b"version-2, longer")
    assert_same_voice(cache.get("narrator"), expected(b"version-2, longer"))
    assert len(prep.calls) == 2
    clip.unlink()  # a vanished file keeps the last voice
    assert_same_voice(cache.get("narrator"), expected(b"version-2, longer"))


def test_concurrent_requests_for_a_new_clip_prepare_it_once():
    prep = FakePrepare(delay=0.2)
    cache = VoiceCache(prep, max_bytes=10 * VOICE_BYTES)
    results, barrier = [], threading.Barrier(8)

    def worker():
        barrier.wait()
        results.append(cache.get_by_clip(b"shared clip"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(prep.calls) == 1 and len(results) == 8
    assert all(torch.equal(r.gen.prompt_feat, results[0].gen.prompt_feat) for r in results)


def test_a_failed_preparation_reaches_every_waiter_and_is_retried():
    prep = FakePrepare(delay=0.1)
    cache = VoiceCache(prep, max_bytes=10 * VOICE_BYTES)
    errors = []

    def worker():
        try:
            cache.get_by_clip(b"bad")
        except VoiceError as e:
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 4 and len(prep.calls) == 1
    with pytest.raises(VoiceError, match="silent"):
        cache.add(b"bad", "x")
    assert len(prep.calls) == 2 and cache.list() == []


@pytest.mark.parametrize("bad_id", ["../evil", "..", "a/b", "a\\b", "/etc/passwd", "", "x" * 65, "a b", "ü",
                                    "nul\0", DEFAULT_VOICE_ID])
def test_unsafe_ids_are_refused(tmp_path, bad_id):
    store = tmp_path / "store"
    cache = VoiceCache(FakePrepare(), store_dir=store)
    with pytest.raises(VoiceError):
        cache.add(b"clip", bad_id)
    with pytest.raises((UnknownVoiceError, VoiceError)):
        cache.remove(bad_id)
    if bad_id != DEFAULT_VOICE_ID:
        with pytest.raises(UnknownVoiceError):
            cache.get(bad_id)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["store"]  # nothing written anywhere


def test_stored_files_are_named_by_hash_never_by_id(tmp_path):
    cache = VoiceCache(FakePrepare(), store_dir=tmp_path)
    cache.add(b"clip", "my-voice_1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["index.log", hashlib.sha256(b"clip").hexdigest() + ".safetensors"])


def test_the_default_voice(tmp_path):
    default = fake_voice(99)
    cache = VoiceCache(FakePrepare(), store_dir=tmp_path, default=default)
    assert cache.get(DEFAULT_VOICE_ID) is default
    cache.add(b"clip", "other")
    assert [i.id for i in cache.list()] == [DEFAULT_VOICE_ID, "other"]
    with pytest.raises(VoiceError, match="cannot be removed"):
        cache.remove(DEFAULT_VOICE_ID)
    VoiceCache(FakePrepare(), store_dir=tmp_path)  # reopening folds the change log into index.json
    assert "default" not in json.loads((tmp_path / "index.json").read_text())["voices"]
    with pytest.raises(UnknownVoiceError, match="no default voice"):
        VoiceCache(FakePrepare()).get(DEFAULT_VOICE_ID)


def test_remove(tmp_path):
    cache = VoiceCache(FakePrepare(), store_dir=tmp_path)
    cache.add(b"clip", "a")
    cache.add(b"clip", "b")
    cache.remove("a")
    assert len(list(tmp_path.glob("*.safetensors"))) == 1  # still used by "b"
    cache.remove("b")
    assert list(tmp_path.glob("*.safetensors")) == [] and cache.stats.memory_bytes == 0
    with pytest.raises(KeyError, match="unknown voice id 'a'"):  # UnknownVoiceError is a KeyError
        cache.get("a")
    assert [i.id for i in VoiceCache(FakePrepare(), store_dir=tmp_path).list()] == []


def test_corrupt_store_entries_are_skipped_with_a_warning(tmp_path, caplog):
    cache = VoiceCache(FakePrepare(), store_dir=tmp_path)
    for name in ("good", "truncated", "bad-hash", "from-file"):
        cache.add(name.encode(), name)
    clip = tmp_path / "ref.wav"
    clip.write_bytes(b"file clip")
    cache.add(clip, "from-file")
    path = lambda clip_bytes: tmp_path / f"{hashlib.sha256(clip_bytes).hexdigest()}.safetensors"  # noqa: E731
    path(b"truncated").write_bytes(path(b"truncated").read_bytes()[:300])
    path(b"file clip").write_bytes(b"garbage")  # recoverable: the clip file is known
    VoiceCache(FakePrepare(), store_dir=tmp_path)  # reopening folds the change log into index.json
    index = json.loads((tmp_path / "index.json").read_text())
    index["voices"]["bad-hash"]["clip_sha256"] = "../../etc/passwd"
    index["voices"]["../escape"] = index["voices"]["good"]
    (tmp_path / "index.json").write_text(json.dumps(index))

    prep = FakePrepare()
    with caplog.at_level(logging.WARNING):
        reopened = VoiceCache(prep, store_dir=tmp_path)
    assert [i.id for i in reopened.list()] == ["from-file", "good"]
    assert "truncated" in caplog.text and "bad-hash" in caplog.text and "../escape" in caplog.text
    assert_same_voice(reopened.get("good"), expected(b"good"))
    assert_same_voice(reopened.get("from-file"), expected(b"file clip"))  # prepared again from the file
    assert prep.calls == [b"file clip"]
    assert len(VoiceCache(FakePrepare(), store_dir=tmp_path).list()) == 2  # and the store is repaired


def test_an_unreadable_index_is_set_aside(tmp_path, caplog):
    (tmp_path / "index.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        cache = VoiceCache(FakePrepare(), store_dir=tmp_path)
    assert cache.list() == [] and "unusable" in caplog.text
    assert len(list(tmp_path.glob("index.json.unreadable-*"))) == 1
    cache.add(b"clip", "a")
    assert [i.id for i in VoiceCache(FakePrepare(), store_dir=tmp_path).list()] == ["a"]


def test_voices_made_with_another_model_are_not_reused(tmp_path, caplog):
    VoiceCache(FakePrepare(), store_dir=tmp_path, model="ckpt-a").add(b"clip", "a")
    with caplog.at_level(logging.WARNING):
        other = VoiceCache(FakePrepare(), store_dir=tmp_path, model="ckpt-b")
    assert other.list() == [] and "ckpt-a" in caplog.text


def _wav_bytes(seconds: float, sr: int = 16000) -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    clip = 0.3 * np.sin(2 * np.pi * (140 + 30 * np.sin(3 * t)) * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, clip.astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def test_with_the_real_tiny_model(tmp_path, tiny_checkpoint):
    from nutq.engine.voice_format import model_fingerprint
    from nutq.tts import TTS

    root = tiny_checkpoint
    tts = TTS.from_local(root)
    model = model_fingerprint(root)
    cache = VoiceCache(tts.prepare_voice, store_dir=tmp_path / "voices", default=tts.default_voice, model=model)
    wav = _wav_bytes(2.5)
    vid = cache.add(wav, "speaker", exaggeration=0.6)
    voice = cache.get(vid)
    assert voice.prompt_tokens.shape == (1, 63) and voice.exaggeration == 0.6
    assert not voice.speaker_emb.requires_grad  # the cache holds no autograd graph
    info = {i.id: i for i in cache.list()}
    assert info["speaker"].clip_seconds == pytest.approx(2.5) and info["speaker"].nbytes == voice_nbytes(voice)
    reopened = VoiceCache(tts.prepare_voice, store_dir=tmp_path / "voices", model=model)
    assert_same_voice(reopened.get(vid), voice)
    assert reopened.stats.prepares == 0


def test_each_change_appends_one_line_and_the_log_is_folded(tmp_path, caplog):
    cache = VoiceCache(FakePrepare(), store_dir=tmp_path)
    for i in range(5):
        cache.add(f"clip{i}".encode(), f"v{i}")
    cache.remove("v0")
    assert not (tmp_path / "index.json").exists(), "a change must not rewrite the whole index"
    assert len((tmp_path / "index.log").read_text().split("\n")) == 1 + 6  # one line per change
    with open(tmp_path / "index.log", "a") as f:
        f.write('\n{"id": "v9", "voi')  # torn by a crash mid-append
    with caplog.at_level(logging.WARNING):
        reopened = VoiceCache(FakePrepare(), store_dir=tmp_path)
    assert [i.id for i in reopened.list()] == ["v1", "v2", "v3", "v4"] and "torn" in caplog.text
    assert (tmp_path / "index.log").read_text() == "" and (tmp_path / "index.json").exists()
    for i in range(40):  # churn: 80 changes, 4 ids; the log is folded at 64 lines (or as many as there are ids)
        reopened.add(f"churn{i}".encode(), "churn")
        reopened.remove("churn")
    assert 0 < len((tmp_path / "index.log").read_text().split("\n")) - 1 < 64
    assert [i.id for i in VoiceCache(FakePrepare(), store_dir=tmp_path).list()] == ["v1", "v2", "v3", "v4"]
