"""The Redis voice store against a real redis-server: voices registered through one cache are seen,
used and removed through another (two replicas), stored voices are validated like files on disk,
and an unreachable Redis is a clear error."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from nutq.engine.voice_cache import UnknownVoiceError, VoiceCache
from nutq.engine.voice_store_redis import RedisVoiceStore, VoiceStoreUnavailable, is_store_url

from tests.deploy.redis_server import redis_url  # noqa: E402, F401 - the fixture
from tests.test_voice_cache import VOICE_BYTES, FakePrepare, expected
from tests.test_voice_format import assert_same_voice

redis = pytest.importorskip("redis")


@pytest.fixture
def model():
    return f"m-{uuid.uuid4().hex[:8]}"  # a namespace of its own per test, on the module's server


def test_store_urls_are_told_from_directories():
    assert is_store_url("redis://127.0.0.1:6379/0") and is_store_url("rediss://h/1") and is_store_url("unix:///s")
    assert not is_store_url("/var/lib/nutq/voices") and not is_store_url("voices") and not is_store_url(None)


def test_a_voice_added_on_one_replica_is_used_on_another_without_preparing(redis_url, model):
    a, b = FakePrepare(), FakePrepare()
    one, two = VoiceCache(a, store_dir=redis_url, model=model), VoiceCache(b, store_dir=redis_url, model=model)
    assert one.add(b"clip-a", "alice", exaggeration=0.7, owner="k1") == "alice"
    assert [(v.id, v.owner, v.exaggeration) for v in two.list()] == [("alice", "k1", 0.7)]
    assert_same_voice(two.get("alice"), expected(b"clip-a", 0.7))
    assert len(a.calls) == 1 and b.calls == [] and two.stats.disk_loads == 1
    assert_same_voice(two.get_by_clip(b"clip-a"), expected(b"clip-a"))  # by content too, from memory now
    two.remove("alice")
    with pytest.raises(UnknownVoiceError):
        one.get("alice")  # removed elsewhere: gone here too, though its voice is still in one's memory
    assert one.list() == [] and one.stats.voices == 0


def test_voice_files_are_shared_by_clip_and_dropped_with_their_last_id(redis_url, model):
    one = VoiceCache(FakePrepare(), store_dir=redis_url, model=model)
    two = VoiceCache(FakePrepare(), store_dir=redis_url, model=model)
    one.add(b"same", "x")
    two.add(b"same", "y")  # same clip through another replica: one file
    client = redis.Redis.from_url(redis_url)
    file_key = f"nutq:voices:{model}:file:{hashlib.sha256(b'same').hexdigest()}"
    assert client.exists(file_key)
    one.remove("x")
    assert client.exists(file_key)  # "y", registered through the other replica, still uses it
    one.remove("y")
    assert not client.exists(file_key)


def test_evicted_voices_come_back_from_redis(redis_url, model):
    prep = FakePrepare()
    cache = VoiceCache(prep, store_dir=redis_url, model=model, max_bytes=VOICE_BYTES)
    cache.add(b"clip-0", "v0")
    cache.add(b"clip-1", "v1")  # evicts v0 from memory; without a store it would be forgotten
    assert_same_voice(cache.get("v0"), expected(b"clip-0"))
    assert len(prep.calls) == 2 and cache.stats.evictions >= 1


def test_voices_of_other_weights_and_corrupt_values_are_not_used(redis_url, model, caplog):
    VoiceCache(FakePrepare(), store_dir=redis_url, model=model).add(b"clip", "v")
    assert VoiceCache(FakePrepare(), store_dir=redis_url, model=model + "-other").list() == []
    client = redis.Redis.from_url(redis_url)
    client.set(f"nutq:voices:{model}:file:{hashlib.sha256(b'clip').hexdigest()}", b"not a voice file")
    client.hset(f"nutq:voices:{model}:ids", "broken", b"{not json")
    fresh = VoiceCache(FakePrepare(), store_dir=redis_url, model=model)
    assert [v.id for v in fresh.list()] == ["v"]  # the broken record is skipped, with a warning
    assert "skipping the record of 'broken'" in caplog.text
    with pytest.raises(UnknownVoiceError, match="cannot be loaded"):
        fresh.get("v")  # the stored value fails validation and its clip is unknown here
    assert "unusable" in caplog.text


def test_an_unreachable_redis_is_a_clear_error():
    with pytest.raises(VoiceStoreUnavailable, match=r"redis://:\*\*\*@127\.0\.0\.1:1/0 is unavailable"):
        RedisVoiceStore("redis://:secret@127.0.0.1:1/0", "m")
    with pytest.raises(VoiceStoreUnavailable, match="bad voice store URL"):
        VoiceCache(FakePrepare(), store_dir="redis://127.0.0.1:notaport/0")


def test_an_outage_answers_503_with_retry_after():
    pytest.importorskip("fastapi")
    from nutq.serve.errors import api_error_from

    err = api_error_from(VoiceStoreUnavailable("voice store redis://r:6379/0 is unavailable: timeout"))
    assert (err.status, err.code) == (503, "voice_store_unavailable") and "Retry-After" in err.headers
