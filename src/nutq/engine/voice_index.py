"""The voice store's index on disk: `index.json`, a snapshot of every registered id, and
`index.log`, one JSON line per change since that snapshot (an id's whole record, or null once it
was removed).

A change appends and fsyncs one line, so registering a voice costs the same however many are
stored (rewriting the whole index on every upload made each one slower than the last). The log is
folded into a new snapshot once it has as many lines as the snapshot has ids (at least
`MIN_FOLD_LINES`), which keeps the cost per change constant on average, and at startup.

A crash can leave a torn last line: it is skipped when reading, and since every line starts with
a newline the next append still begins a line of its own. It can also leave a log that was
already folded into the snapshot: replaying it again changes nothing, each line being an id's
whole state.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

from .voice_format import atomic_write_bytes

__all__ = ["VoiceIndex", "INDEX_FILE", "LOG_FILE", "clean_leftovers"]

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
LOG_FILE = "index.log"
INDEX_FORMAT = "nutq-voice-index"
INDEX_VERSION = 1
MIN_FOLD_LINES = 64
_SHA256 = re.compile(r"[0-9a-f]{64}")  # voice files are named by their clip's sha256


class VoiceIndex:
    """Records (plain dicts) by voice id, persisted in `store`; not thread-safe (the cache orders
    its calls)."""

    def __init__(self, store: Path, model: str | None):
        self.store, self.model = store, model
        self.log_lines = 0

    def read(self) -> dict[str, dict] | None:
        """The records, snapshot then log; None when the snapshot is unreadable (it is moved aside,
        with a warning, and the store starts empty)."""
        records = self._read_snapshot()
        if records is None:
            return None
        path = self.store / LOG_FILE
        if path.exists():
            for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
                if not line.strip():
                    continue
                try:
                    change = json.loads(line)
                    vid, rec = change["id"], change["voice"]
                    if not isinstance(vid, str) or not (rec is None or isinstance(rec, dict)):
                        raise ValueError("not a change record")
                except (ValueError, KeyError, TypeError) as e:
                    log.warning("voice store: skipping line %d of %s (%s; torn by a crash?)", n + 1, LOG_FILE, e)
                    continue
                self.log_lines += 1
                if rec is None:
                    records.pop(vid, None)
                else:
                    records[vid] = rec
        return records

    def _read_snapshot(self) -> dict[str, dict] | None:
        path = self.store / INDEX_FILE
        if not path.exists():
            return {}
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != INDEX_FORMAT or not isinstance(doc.get("voices"), dict):
                raise ValueError("not a nutq voice index")
            if doc.get("version") != INDEX_VERSION:
                raise ValueError(f"index version {doc.get('version')!r}; this nutq reads {INDEX_VERSION}")
        except (OSError, UnicodeDecodeError, ValueError) as e:
            aside = path.with_name(f"{INDEX_FILE}.unreadable-{int(time.time())}")
            log.warning("voice store index %s is unusable (%s); starting empty, the old index is kept as %s",
                        path, e, aside.name)
            try:
                os.replace(path, aside)
            except OSError as e2:
                log.warning("could not move the unusable index aside: %s", e2)
            return None
        return {vid: rec for vid, rec in doc["voices"].items()}

    def append(self, voice_id: str, record: dict | None) -> None:
        """Record one id's new state (None: removed), durably. On failure (e.g. a full disk) the
        log is cut back to where it was and the OSError raised: nothing of the change remains."""
        line = ("\n" + json.dumps({"id": voice_id, "voice": record}, sort_keys=True)).encode()
        with open(self.store / LOG_FILE, "ab") as f:
            at = f.tell()
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                try:
                    f.truncate(at)
                except OSError as e:
                    log.warning("voice store: could not cut a failed change off %s: %s", LOG_FILE, e)
                raise
        self.log_lines += 1

    def should_fold(self, n_records: int) -> bool:
        return self.log_lines >= max(MIN_FOLD_LINES, n_records)

    def fold(self, records: dict[str, dict]) -> None:
        """Write `records` as the snapshot, then empty the log."""
        doc = {"format": INDEX_FORMAT, "version": INDEX_VERSION, "model": self.model, "voices": records}
        atomic_write_bytes(self.store / INDEX_FILE, json.dumps(doc, indent=1, sort_keys=True).encode())
        with open(self.store / LOG_FILE, "w") as f:
            os.fsync(f.fileno())
        self.log_lines = 0


def clean_leftovers(store: Path, indexed: set[str] | None) -> None:
    """What a crash can leave in the store: temporary files of interrupted atomic writes, and
    voice files whose index entry was never written (their upload was never acknowledged: the
    index is written before `add` returns). Both are deleted, each with a log line. `indexed`: the
    clip hashes the index names (their voice files are kept, usable or not); None when the index
    itself was unreadable, and then every voice file is kept."""
    for path in sorted(store.iterdir()):
        name, h = path.name, path.name.removesuffix(".safetensors")
        stale_tmp = name.startswith(".") and name.endswith(".tmp")
        orphan = indexed is not None and name != h and bool(_SHA256.fullmatch(h)) and h not in indexed
        if not (stale_tmp or orphan) or not path.is_file():
            continue
        try:
            path.unlink()
        except OSError as e:
            log.warning("voice store: could not remove leftover %s: %s", name, e)
            continue
        log.warning("voice store: removed %s left by an interrupted write", name if stale_tmp else
                    f"voice file {name} (no index entry)")
