"""A voice store in Redis, shared by every server that names the same Redis (`--voice-store
redis://host:6379/0`): a voice registered through one replica is usable through all of them.

What is kept, under `<prefix>:voices:<model>:` (the model fingerprint in the key: voices made
with other weights are never seen, as with the directory store):

    ids            one hash: voice id -> the id's record (JSON, the `VoiceCache` entry's fields)
    file:<sha256>  one string per reference clip: the nutq voice file (`voice_format`, safetensors)

The cache uses `entries()` as its table of ids, so every lookup reads the current state from Redis
(a voice removed elsewhere is gone here too) while prepared voices stay in each replica's memory
LRU, keyed by clip hash: a stale in-memory voice can never be the wrong one. Voice files read back
go through the same strict validation as files from disk (`voice_format.loads_voice`), so a
corrupt or foreign value is refused, never trusted. A record that does not decode is skipped
with a warning.

Concurrency between replicas: each change is one Redis command (or one script), atomic on its own;
deleting a voice file runs as a script that re-checks, inside Redis, that no id still names the
clip. Registering the same id on two replicas at once: the last write wins.

The cache reads and writes this table under its own lock, so each id lookup is a Redis round trip
under that lock: sub-millisecond on a local network, and bounded by a 5 s socket timeout.

A Redis that cannot be reached raises `VoiceStoreUnavailable` (the server answers 503).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator, MutableMapping
from urllib.parse import urlsplit

from ..errors import NutqError
from .voice import Voice, VoiceError
from .voice_format import VoiceMeta, dumps_voice, loads_voice

__all__ = ["RedisVoiceStore", "VoiceStoreUnavailable", "is_store_url"]

log = logging.getLogger(__name__)

_SCHEMES = ("redis", "rediss", "unix")
_TIMEOUT_S = 5.0

# Deletes a voice file unless a record still names its clip; atomic inside Redis, so an `add` of
# the same clip on another replica cannot lose its file between the check and the delete.
_DROP_FILE = """
for _, rec in ipairs(redis.call('HVALS', KEYS[1])) do
  if string.find(rec, ARGV[1], 1, true) then return 0 end
end
return redis.call('DEL', KEYS[2])
"""


class VoiceStoreUnavailable(NutqError, RuntimeError):
    """The shared voice store (Redis) cannot be reached or answered with an error."""


def is_store_url(store) -> bool:
    """True when `store` (a `--voice-store` value) names Redis rather than a directory."""
    return isinstance(store, str) and urlsplit(store).scheme in _SCHEMES


def _redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=f"{user}{host}{port}").geturl()


class RedisVoiceStore:
    """Voice records by id and voice files by clip hash, in Redis (see the module docstring)."""

    def __init__(self, url: str, model: str | None, *, prefix: str = "nutq"):
        try:
            import redis
        except ImportError:
            raise VoiceStoreUnavailable("a redis:// voice store needs the redis client: pip install 'nutq[redis]'") \
                from None
        self._errors = (redis.RedisError, OSError)
        self.url = _redacted(url)
        try:
            self._r = redis.Redis.from_url(url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S)
        except ValueError as e:
            raise VoiceStoreUnavailable(f"bad voice store URL {self.url}: {e}") from None
        ns = f"{prefix}:voices:{model or 'any'}"
        self.ids_key, self._file_prefix = f"{ns}:ids", f"{ns}:file:"
        self._model = model
        self._call(self._r.ping)  # fail at startup, not on the first request
        self._drop = self._r.register_script(_DROP_FILE)

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except self._errors as e:
            raise VoiceStoreUnavailable(f"voice store {self.url} is unavailable: {e}") from None

    def entries(self, entry_type: type) -> "RedisEntries":
        """The table of ids as a mapping of `entry_type` (a dataclass) values, read and written in Redis."""
        return RedisEntries(self, entry_type)

    # --- voice files, by clip hash -----------------------------------------------------------------

    def has_file(self, h: str) -> bool:
        return bool(self._call(self._r.exists, self._file_prefix + h))

    def save(self, h: str, voice: Voice, meta: VoiceMeta) -> None:
        self._call(self._r.set, self._file_prefix + h, dumps_voice(voice, meta))

    def load(self, h: str) -> Voice | None:
        """The stored voice of clip hash `h`; None when there is none or it is unusable (warned)."""
        data = self._call(self._r.get, self._file_prefix + h)
        if data is None:
            return None
        try:
            voice, meta = loads_voice(data, model=self._model, where=f"voice store entry {h[:16]}")
            if meta.clip_sha256 not in (None, h):
                raise VoiceError("the stored voice belongs to another clip")
        except VoiceError as e:
            log.warning("stored voice %s is unusable (%s); preparing it again if its clip is known", h[:16], e)
            return None
        return voice

    def drop_file(self, h: str) -> None:
        """Delete the voice file of `h` unless some id (registered by any replica) still uses it."""
        self._call(self._drop, [self.ids_key, self._file_prefix + h], [json.dumps(h)])

    # --- records, by id ----------------------------------------------------------------------------

    def record(self, voice_id: str) -> bytes | None:
        return self._call(self._r.hget, self.ids_key, voice_id)

    def records(self) -> dict[bytes, bytes]:
        return self._call(self._r.hgetall, self.ids_key)

    def put_record(self, voice_id: str, data: str) -> None:
        self._call(self._r.hset, self.ids_key, voice_id, data)

    def delete_record(self, voice_id: str) -> bool:
        return bool(self._call(self._r.hdel, self.ids_key, voice_id))

    def count(self) -> int:
        return int(self._call(self._r.hlen, self.ids_key))


class RedisEntries(MutableMapping):
    """`VoiceCache`'s id table kept in Redis: values are `entry_type` dataclasses, stored as JSON."""

    def __init__(self, store: RedisVoiceStore, entry_type: type):
        self._store, self._type = store, entry_type
        self._fields = {f.name for f in dataclasses.fields(entry_type)}

    def _decode(self, voice_id: str, raw: bytes):
        try:
            d = json.loads(raw)
            if not isinstance(d, dict) or set(d) != self._fields:
                raise ValueError("unexpected fields")
            if d.get("source_sig") is not None:
                d["source_sig"] = tuple(int(x) for x in d["source_sig"])
            return self._type(**d)
        except (ValueError, TypeError) as e:
            log.warning("voice store: skipping the record of %r (%s)", voice_id, e)
            return None

    def __getitem__(self, voice_id: str):
        raw = self._store.record(voice_id)
        entry = None if raw is None else self._decode(voice_id, raw)
        if entry is None:
            raise KeyError(voice_id)
        return entry

    def __setitem__(self, voice_id: str, entry) -> None:
        self._store.put_record(voice_id, json.dumps(dataclasses.asdict(entry), sort_keys=True))

    def __delitem__(self, voice_id: str) -> None:
        if not self._store.delete_record(voice_id):
            raise KeyError(voice_id)

    def _all(self) -> dict:
        out = {}
        for k, raw in self._store.records().items():
            vid = k.decode("utf-8", "replace")
            entry = self._decode(vid, raw)
            if entry is not None:
                out[vid] = entry
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return self._store.count()

    # one round trip each, instead of the mixin's one per key
    def items(self):
        return self._all().items()

    def values(self):
        return self._all().values()
