"""Voice cache: voices by id and by reference-clip content, LRU in memory, persisted on disk.

Preparing a voice runs the voice encoder, the S3 tokenizer and CAMPPlus over a 10 s clip (about a
second at full size on CPU), so a server must not redo it per request. Here:

* the in-memory LRU is keyed by the sha256 of the clip's bytes: the same clip is prepared once,
  whichever id or request it comes from, and it is bounded by the bytes of the voices' tensors;
* ids name voices for users (`[A-Za-z0-9_-]{1,64}`, "default" reserved for the checkpoint's
  built-in voice) and carry their own exaggeration;
* with a store directory, every voice registered by `add` is written as a nutq voice file named by
  its clip hash (ids never become paths), atomically, and recorded in the store's index (see
  `voice_index`: one appended line per change), and reloaded by a new instance; an entry that
  cannot be read back is skipped with a warning;
* with a `redis://` URL instead of a directory, ids and voice files live in Redis, shared by
  every server naming it (see `voice_store_redis`);
* a voice registered from a file path notices when the file changes (size or mtime, then the bytes'
  hash) and is prepared again.

Thread-safe: one lock guards the tables and is never held while preparing or doing file I/O;
concurrent requests for the same new clip wait for a single preparation. `prepare` itself is called
from several threads at once for different clips. Voices handed out share tensors with the cache:
treat them as read-only. Voices reloaded from disk are on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from ..errors import NutqError
from .voice import Voice, VoiceError
from .voice_format import VoiceMeta, load_voice, read_voice_meta, save_voice, voice_nbytes
from .voice_index import VoiceIndex, clean_leftovers
from .voice_source import clip_info, file_sig
from .voice_store_redis import is_store_url

__all__ = ["VoiceCache", "VoiceInfo", "CacheStats", "UnknownVoiceError", "DEFAULT_VOICE_ID", "VOICE_ID_PATTERN"]

log = logging.getLogger(__name__)

DEFAULT_VOICE_ID = "default"
VOICE_ID_PATTERN = r"[A-Za-z0-9_-]{1,64}"
_ID = re.compile(VOICE_ID_PATTERN)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class UnknownVoiceError(NutqError, KeyError):
    """No voice with that id (never registered, removed, or evicted with no store to reload it from)."""

    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class VoiceInfo:
    id: str
    clip_sha256: str | None  # None for the built-in default voice
    exaggeration: float
    created: float | None  # unix time of registration
    clip_seconds: float | None  # duration of the reference clip, when its format says
    nbytes: int  # tensor bytes of the voice
    source: str | None  # the clip's path when registered from a file
    in_memory: bool
    owner: str | None = None  # who registered it (a server's client id), when `add` was told


@dataclass(frozen=True)
class CacheStats:
    hits: int  # voice found in memory
    misses: int  # not in memory: reloaded from the store or prepared
    evictions: int  # voices dropped from memory by the byte bound
    prepares: int  # calls of `prepare` that returned a voice
    disk_loads: int  # voices read back from the store
    memory_bytes: int  # tensor bytes held in memory now (the default voice excluded)
    voices: int  # registered ids (the default voice excluded)


@dataclass
class _Entry:
    """One registered id (mutable: the lock guards it)."""

    clip_sha256: str
    exaggeration: float
    created: float
    clip_seconds: float | None
    clip_sample_rate: int | None
    nbytes: int
    source: str | None = None  # absolute path of the clip when registered from a file
    source_sig: tuple[int, int] | None = None  # (size, mtime_ns) when last read
    owner: str | None = None


def check_voice_id(voice_id: str) -> str:
    """Return `voice_id` if it is a safe id; VoiceError otherwise."""
    if not isinstance(voice_id, str) or not _ID.fullmatch(voice_id):
        raise VoiceError(f"invalid voice id {voice_id!r}: use 1-64 characters from A-Z a-z 0-9 _ -")
    return voice_id


def _detached(v: Voice) -> Voice:
    g = v.gen
    d = lambda t: None if t is None else t.detach()  # noqa: E731
    gen = type(g)(d(g.prompt_token), d(g.prompt_token_len), d(g.prompt_feat), d(g.embedding), d(g.prompt_feat_len))
    return Voice(d(v.speaker_emb), d(v.prompt_tokens), v.exaggeration, gen)


class VoiceCache:
    """Voices by id and by clip content; see the module docstring for the guarantees."""

    def __init__(self, prepare: Callable[[bytes], Voice], *, store_dir: str | Path | None = None,
                 max_bytes: int = 256 * 1024 * 1024, default: Voice | None = None, model: str | None = None):
        """`prepare(clip_bytes) -> Voice` computes a voice (raising VoiceError for a bad clip). `model`
        identifies the weights (e.g. `voice_format.model_fingerprint`): stored voices made with other
        weights are not reused. `store_dir` may be a `redis://` URL (see `voice_store_redis`)."""
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self._shared = None  # a store shared by replicas (`voice_store_redis`), named by a URL
        if is_store_url(store_dir):
            from .voice_store_redis import RedisVoiceStore

            self._shared, store_dir = RedisVoiceStore(store_dir, model), None
        self._prepare = prepare
        self._store = Path(store_dir) if store_dir is not None else None
        self._max_bytes = int(max_bytes)
        self._default = default
        self._model = model
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {} if self._shared is None else self._shared.entries(_Entry)
        self._mem: OrderedDict[str, Voice] = OrderedDict()  # clip sha256 -> voice, least recent first
        self._mem_bytes = 0
        self._pending: dict[str, Future] = {}  # clip sha256 -> the one preparation in flight
        self._counts = dict(hits=0, misses=0, evictions=0, prepares=0, disk_loads=0)
        self._index_lock = threading.Lock()  # orders index writes; never taken while holding _lock
        if self._store is not None:
            self._store.mkdir(parents=True, exist_ok=True)
            self._index = VoiceIndex(self._store, model)
            self._entries = self._read_index()
            clean_leftovers(self._store, self._indexed)
            if self._index.log_lines:
                self._index.fold(self._records())

    # --- public API -------------------------------------------------------------------------------

    def add(self, clip: bytes | str | Path, voice_id: str | None = None, exaggeration: float = 0.5, *,
            owner: str | None = None) -> str:
        """Register a voice from clip bytes or a clip file; returns its id.

        Without an id, the id is derived from the clip's hash, so adding the same clip again returns
        the same id. Registering an existing id with another clip replaces that voice. `owner` is
        recorded with it (see `VoiceInfo.owner`). If storing fails (e.g. a full disk: the OSError
        is raised), the cache and the store are left as they were."""
        if voice_id is not None:
            check_voice_id(voice_id)
            if voice_id == DEFAULT_VOICE_ID:
                raise VoiceError(f"the id {DEFAULT_VOICE_ID!r} is reserved for the built-in voice")
        exaggeration = self._check_exaggeration(exaggeration)
        source = sig = None
        if isinstance(clip, (str, Path)):
            source = str(Path(clip).resolve())
            sig = file_sig(source)  # before reading: a change after this is noticed on the next get
            clip = self._read_clip(source)
        elif not isinstance(clip, (bytes, bytearray, memoryview)):
            raise TypeError(f"clip must be bytes or a path, not {type(clip).__name__}")
        clip = bytes(clip)
        h = hashlib.sha256(clip).hexdigest()
        voice_id = voice_id or f"v-{h[:16]}"
        seconds, sr = clip_info(clip)
        voice = self._voice_for(h, lambda: clip, persist=True)
        entry = _Entry(h, exaggeration, time.time(), seconds, sr, voice_nbytes(voice), source, sig, owner)
        with self._lock:
            old = self._entries.get(voice_id)
            self._entries[voice_id] = entry
        try:
            # After registering: from now on a concurrent remove of another id cannot delete this file.
            if self._persistent and not self._has_stored(h):
                self._persist(h, voice, clip)
            self._save_change(voice_id)
        except BaseException:
            with self._lock:
                if self._entries.get(voice_id) is entry:
                    if old is None:
                        del self._entries[voice_id]
                    else:
                        self._entries[voice_id] = old
            self._forget_unreferenced(h)
            raise
        if old is not None and old.clip_sha256 != h:
            self._forget_unreferenced(old.clip_sha256)
        return voice_id

    def get(self, voice_id: str) -> Voice:
        """The voice registered under `voice_id` (UnknownVoiceError if there is none)."""
        if voice_id == DEFAULT_VOICE_ID:
            if self._default is None:
                raise UnknownVoiceError("no default voice: the checkpoint has no conds.pt; register a voice")
            return self._default
        entry = self._entry(voice_id)
        if entry.source is not None:
            entry = self._refresh_from_source(voice_id, entry)
        source = entry.source

        def reload_clip() -> bytes:
            if source is None:  # only reachable when the stored file went missing or bad since start-up
                raise UnknownVoiceError(f"voice {voice_id!r} cannot be loaded: its stored file is missing or"
                                        f" unusable and its clip is unknown; add it again")
            return self._read_clip(source)

        return self._voice_for(entry.clip_sha256, reload_clip, persist=True).with_exaggeration(entry.exaggeration)

    def get_by_clip(self, clip: bytes, exaggeration: float = 0.5) -> Voice:
        """The voice of these clip bytes, prepared at most once while it stays cached. It gets no id
        and is not written to the store (use `add` for voices that should survive a restart)."""
        clip = bytes(clip)
        exaggeration = self._check_exaggeration(exaggeration)
        h = hashlib.sha256(clip).hexdigest()
        return self._voice_for(h, lambda: clip, persist=False).with_exaggeration(exaggeration)

    def remove(self, voice_id: str) -> None:
        """Forget `voice_id` (and its stored file when no other id uses the same clip)."""
        if voice_id == DEFAULT_VOICE_ID:
            raise VoiceError("the built-in default voice cannot be removed")
        with self._lock:
            entry = self._entries.pop(voice_id, None)
        if entry is None:
            raise UnknownVoiceError(f"unknown voice id {voice_id!r}")
        self._forget_unreferenced(entry.clip_sha256, drop_from_memory=True)
        self._save_change(voice_id)

    def list(self) -> list[VoiceInfo]:
        """All voices, the default first, then by id."""
        out = []
        if self._default is not None:
            out.append(VoiceInfo(DEFAULT_VOICE_ID, None, self._default.exaggeration, None, None,
                                 voice_nbytes(self._default), None, True))
        with self._lock:
            for vid in sorted(self._entries):
                e = self._entries[vid]
                out.append(VoiceInfo(vid, e.clip_sha256, e.exaggeration, e.created, e.clip_seconds, e.nbytes,
                                     e.source, e.clip_sha256 in self._mem, e.owner))
        return out

    @property
    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(**self._counts, memory_bytes=self._mem_bytes, voices=len(self._entries))

    # --- internals --------------------------------------------------------------------------------

    @staticmethod
    def _check_exaggeration(value: float) -> float:
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise VoiceError(f"exaggeration must be a finite number >= 0, got {value}")
        return value

    def _entry(self, voice_id: str) -> _Entry:
        with self._lock:
            entry = self._entries.get(voice_id) if isinstance(voice_id, str) else None
            n = len(self._entries)
        if entry is None:
            hint = "" if isinstance(voice_id, str) and _ID.fullmatch(voice_id) else \
                f" (ids are {VOICE_ID_PATTERN})"
            raise UnknownVoiceError(f"unknown voice id {voice_id!r}{hint}; {n} voices are registered"
                                    f"{' plus ' + repr(DEFAULT_VOICE_ID) if self._default is not None else ''}")
        return entry

    def _voice_path(self, clip_sha256: str) -> Path:
        assert self._store is not None and _SHA256.fullmatch(clip_sha256)
        return self._store / f"{clip_sha256}.safetensors"

    @staticmethod
    def _read_clip(path: str) -> bytes:
        from .voice import MAX_REF_BYTES

        try:
            if os.path.getsize(path) > MAX_REF_BYTES:
                raise VoiceError(f"reference audio {path} is larger than {MAX_REF_BYTES} bytes")
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise VoiceError(f"cannot read reference audio {path}: {e}") from None

    def _refresh_from_source(self, voice_id: str, entry: _Entry) -> _Entry:
        """Re-prepare a file-registered voice whose file changed. A vanished file keeps the last voice."""
        sig = file_sig(entry.source)
        if sig is None:
            log.warning("reference clip %s of voice %r is gone; using the voice made from it before",
                        entry.source, voice_id)
            return entry
        if sig == entry.source_sig:
            return entry
        clip = self._read_clip(entry.source)
        h = hashlib.sha256(clip).hexdigest()
        if h != entry.clip_sha256:
            log.info("reference clip %s of voice %r changed; preparing the voice again", entry.source, voice_id)
            seconds, sr = clip_info(clip)
            voice = self._voice_for(h, lambda: clip, persist=True)
            new = _Entry(h, entry.exaggeration, time.time(), seconds, sr, voice_nbytes(voice), entry.source, sig)
        else:
            voice, new = None, _Entry(**{**vars(entry), "source_sig": sig})  # touched, same bytes
        with self._lock:
            if self._entries.get(voice_id) is entry:  # not replaced or removed meanwhile
                self._entries[voice_id] = new
        if voice is not None and self._persistent and not self._has_stored(h):
            self._persist(h, voice, clip)
        if new.clip_sha256 != entry.clip_sha256:
            self._forget_unreferenced(entry.clip_sha256)
        self._save_change(voice_id)
        return new

    def _voice_for(self, h: str, load_clip: Callable[[], bytes], *, persist: bool) -> Voice:
        """The voice of clip hash `h`: from memory, else the store, else `prepare(load_clip())` (written
        to the store when `persist`). Concurrent callers for the same `h` share one load or preparation."""
        with self._lock:
            voice = self._mem.get(h)
            if voice is not None:
                self._mem.move_to_end(h)
                self._counts["hits"] += 1
                return voice
            self._counts["misses"] += 1
            fut = self._pending.get(h)
            owner = fut is None
            if owner:
                fut = self._pending[h] = Future()
        if not owner:
            return fut.result()  # re-raises the owner's error
        try:
            voice = self._load_stored(h)
            if voice is None:
                clip = load_clip()
                # detached: a voice prepared with autograd on would otherwise keep the encoders' graph alive
                voice = _detached(self._prepare(clip))
                with self._lock:
                    self._counts["prepares"] += 1
                if persist and self._persistent:
                    self._persist(h, voice, clip)  # also replaces a stored file that proved unusable
            with self._lock:
                self._remember(h, voice)
            fut.set_result(voice)
            return voice
        except BaseException as e:
            fut.set_exception(e)
            raise
        finally:
            with self._lock:
                self._pending.pop(h, None)

    @property
    def _persistent(self) -> bool:
        return self._store is not None or self._shared is not None

    def _has_stored(self, h: str) -> bool:
        return self._shared.has_file(h) if self._shared is not None else self._voice_path(h).exists()

    def _load_stored(self, h: str) -> Voice | None:
        if self._shared is not None:
            voice = self._shared.load(h)
            if voice is not None:
                with self._lock:
                    self._counts["disk_loads"] += 1
            return voice
        if self._store is None or not self._voice_path(h).exists():
            return None
        try:
            voice = load_voice(self._voice_path(h), model=self._model)
        except VoiceError as e:
            log.warning("stored voice %s is unusable (%s); preparing it again if its clip is known", h[:16], e)
            return None
        with self._lock:
            self._counts["disk_loads"] += 1
        return voice

    def _persist(self, h: str, voice: Voice, clip: bytes) -> None:
        seconds, sr = clip_info(clip)
        meta = VoiceMeta(model=self._model, clip_sha256=h, clip_sample_rate=sr, clip_seconds=seconds)
        if self._shared is not None:
            self._shared.save(h, voice, meta)
        else:
            save_voice(voice, self._voice_path(h), meta=meta)

    def _remember(self, h: str, voice: Voice) -> None:
        """Insert into the LRU and evict down to the byte bound (caller holds the lock). The newest
        voice stays even when it alone exceeds the bound: its caller is about to use it."""
        if h in self._mem:
            self._mem_bytes -= voice_nbytes(self._mem.pop(h))
        self._mem[h] = voice
        self._mem_bytes += voice_nbytes(voice)
        while self._mem_bytes > self._max_bytes and len(self._mem) > 1:
            old_h, old = self._mem.popitem(last=False)
            self._mem_bytes -= voice_nbytes(old)
            self._counts["evictions"] += 1
            if not self._persistent:
                # Nothing to reload from, except for voices registered from a clip file: forget the ids.
                for vid in [v for v, e in self._entries.items() if e.clip_sha256 == old_h and e.source is None]:
                    del self._entries[vid]
                    log.warning("voice %r evicted from memory and forgotten (no voice store configured)", vid)

    def _forget_unreferenced(self, h: str, drop_from_memory: bool = False) -> None:
        """Delete the stored file of clip hash `h` (and optionally its memory copy) if no id uses it."""
        with self._lock:  # unlink under the lock: an `add` of the same clip must not lose its file
            if any(e.clip_sha256 == h for e in self._entries.values()):
                return
            if drop_from_memory and h in self._mem:
                self._mem_bytes -= voice_nbytes(self._mem.pop(h))
            if self._store is not None:
                self._voice_path(h).unlink(missing_ok=True)
            elif self._shared is not None:
                self._shared.drop_file(h)  # checks again in Redis: other replicas' ids count too

    # --- the index --------------------------------------------------------------------------------

    @staticmethod
    def _record(e: _Entry) -> dict:
        return {"clip_sha256": e.clip_sha256, "exaggeration": e.exaggeration, "created": e.created,
                "clip_seconds": e.clip_seconds, "clip_sample_rate": e.clip_sample_rate, "nbytes": e.nbytes,
                "source": e.source, "owner": e.owner, "source_sig": list(e.source_sig) if e.source_sig else None}

    def _records(self) -> dict[str, dict]:
        """What the index holds: every registered id, and the records found unusable at startup
        (kept, with their files, for weights they do fit) unless their id was registered since."""
        with self._lock:
            return {**self._unusable, **{vid: self._record(e) for vid, e in self._entries.items()}}

    def _save_change(self, voice_id: str) -> None:
        """Persist `voice_id`'s current state (or its removal). The state is read under the index
        lock, so whichever change is saved last carries the latest state of the id."""
        if self._store is None:
            return
        with self._index_lock:
            with self._lock:
                entry = self._entries.get(voice_id)
                n = len(self._entries)
            self._index.append(voice_id, None if entry is None else self._record(entry))
            if self._index.should_fold(n):
                self._index.fold(self._records())

    def _read_index(self) -> dict[str, _Entry]:
        records = self._index.read()
        # clip hashes the index names (None: it was unreadable), whose files are never removed as leftovers
        self._indexed = None if records is None else {r.get("clip_sha256") for r in records.values()
                                                      if isinstance(r, dict)}
        entries = {}
        self._unusable: dict[str, dict] = {}
        for vid, rec in (records or {}).items():
            try:
                entries[vid] = self._entry_from_record(vid, rec)
            except (VoiceError, TypeError, ValueError, KeyError) as e:
                log.warning("skipping stored voice %r: %s", vid, e)
                h = rec.get("clip_sha256") if isinstance(rec, dict) else None
                if isinstance(h, str) and _SHA256.fullmatch(h) and _ID.fullmatch(vid) and vid != DEFAULT_VOICE_ID:
                    self._unusable[vid] = rec  # e.g. made with other weights: kept, not lost
        return entries

    def _entry_from_record(self, vid: str, rec: dict) -> _Entry:
        check_voice_id(vid)
        if vid == DEFAULT_VOICE_ID:
            raise VoiceError("the id 'default' is reserved")
        h = rec["clip_sha256"]
        if not isinstance(h, str) or not _SHA256.fullmatch(h):
            raise VoiceError("bad clip hash")
        source = rec.get("source")
        sig = tuple(int(x) for x in rec["source_sig"]) if rec.get("source_sig") else None
        try:
            _, meta = read_voice_meta(self._voice_path(h), model=self._model)
            if meta.clip_sha256 not in (None, h):
                raise VoiceError("the stored file belongs to another clip")
        except VoiceError:
            if source is None:
                raise
            # The clip file is known: the voice will be prepared again from it on first use.
            log.warning("stored voice file of %r is unusable; it will be prepared again from %s", vid, source)
            sig = None
        seconds, sr, owner = rec.get("clip_seconds"), rec.get("clip_sample_rate"), rec.get("owner")
        return _Entry(h, self._check_exaggeration(rec["exaggeration"]), float(rec["created"]),
                      None if seconds is None else float(seconds), None if sr is None else int(sr),
                      int(rec["nbytes"]), None if source is None else str(source), sig,
                      None if owner is None else str(owner))
