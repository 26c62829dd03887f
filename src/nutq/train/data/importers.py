"""Manifests from common corpus layouts: Common Voice releases and Hugging Face `audiofolder` directories.

Common Voice (`cv-corpus-*/ar/`): TSV files (`validated.tsv`, `train.tsv`, `dev.tsv`, …) with the
columns `client_id` (the speaker), `path` (a file under `clips/`), `sentence`, `gender`, and the
accent in `accents` (or `accent` in old releases). Common Voice's own `train`/`dev` files are
speaker-disjoint, so they become the manifest splits `train`/`val`; other files give no split.

audiofolder: `metadata.csv` or `metadata.jsonl` with a `file_name` column (relative to the file)
and the transcript in `text`, `transcription`, `sentence` or `transcript`; `speaker` or
`speaker_id`, `dialect`, `gender` when present. Metadata in split folders (`train/`,
`validation/`, `dev/`, `test/`, …) gives those rows the split of the folder (test rows are kept
without a split).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .errors import DataError
from .manifest import KNOWN_DIALECTS, SPLIT_ALIASES, ManifestProblem, Utterance, normalize_dialect, normalize_gender

__all__ = ["import_common_voice", "import_audiofolder"]

_TEXT_COLUMNS = ("text", "transcription", "sentence", "transcript")
_SPEAKER_COLUMNS = ("speaker", "speaker_id", "client_id")


def _split_of(name: str) -> str | None:
    return SPLIT_ALIASES.get(name.lower())


def import_common_voice(root: str | Path, tsvs: tuple[str, ...] = ("validated.tsv",), dialect: str = "msa"
                        ) -> tuple[list[Utterance], list[ManifestProblem]]:
    """Utterances of a Common Voice language directory. `dialect`: the label for clips whose
    accent column names no dialect nutq knows."""
    root = Path(root)
    out, problems, seen = [], [], set()
    for name in tsvs:
        tsv = root / name
        if not tsv.is_file():
            raise DataError(f"{tsv} not found (a Common Voice language directory has validated.tsv, train.tsv, …)")
        split = _split_of(Path(name).stem)
        with tsv.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            for n, row in enumerate(reader, 2):
                clip, text, spk = row.get("path"), row.get("sentence"), row.get("client_id")
                if not clip or text is None or not spk:
                    problems.append(ManifestProblem(n, clip, f"{name}: row lacks path, sentence or client_id"))
                    continue
                if clip in seen:
                    continue  # validated.tsv and train.tsv list the same clips
                seen.add(clip)
                accent = (row.get("accents") or row.get("accent") or "").strip()
                accent = normalize_dialect(accent) if accent else ""
                accent = accent if accent in KNOWN_DIALECTS else normalize_dialect(dialect)
                out.append(Utterance(id=clip, audio=root / "clips" / clip, text=text, speaker=spk,
                                     dialect=accent,
                                     gender=normalize_gender(row.get("gender")), split=split, line=n))
    return out, problems


def _rows(meta: Path):
    if meta.suffix == ".csv":
        with meta.open(encoding="utf-8", newline="") as f:
            yield from enumerate(csv.DictReader(f), 2)
        return
    with meta.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield n, json.loads(line)
                except json.JSONDecodeError as e:
                    yield n, ValueError(f"not JSON: {e}")


def _first(row: dict, names) -> str | None:
    for k in names:
        if row.get(k) not in (None, ""):
            return str(row[k])
    return None


def import_audiofolder(root: str | Path, dialect: str = "msa") -> tuple[list[Utterance], list[ManifestProblem]]:
    """Utterances of an audiofolder directory (metadata at the top or in split folders)."""
    root = Path(root)
    metas = sorted(p for p in root.glob("*/metadata.*") if p.suffix in (".csv", ".jsonl"))
    metas = [p for p in (root / "metadata.csv", root / "metadata.jsonl") if p.is_file()] + metas
    if not metas:
        raise DataError(f"{root} has no metadata.csv or metadata.jsonl (at the top or in split folders)")
    out, problems = [], []
    for meta in metas:
        split = _split_of(meta.parent.name) if meta.parent != root else None
        for n, row in _rows(meta):
            where = f"{meta.relative_to(root)}:{n}"
            if isinstance(row, Exception) or not isinstance(row, dict):
                problems.append(ManifestProblem(n, None, f"{where}: {row if isinstance(row, Exception) else 'not an object'}"))
                continue
            clip, text, spk = row.get("file_name"), _first(row, _TEXT_COLUMNS), _first(row, _SPEAKER_COLUMNS)
            if not clip or text is None or not spk:
                problems.append(ManifestProblem(n, clip, f"{where}: row lacks file_name, a transcript or a speaker"))
                continue
            own_split = _split_of(str(row.get("split") or "")) or split
            out.append(Utterance(id=str(Path(meta.parent.relative_to(root)) / clip), audio=meta.parent / clip,
                                 text=text, speaker=spk, dialect=normalize_dialect(row.get("dialect") or dialect),
                                 gender=normalize_gender(row.get("gender")), split=own_split, line=n))
    return out, problems
