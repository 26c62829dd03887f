"""The manifest: one JSON object per line, one line per utterance.

Fields (see docs/training-data.md):

- `audio` (required): path of the clip, absolute or relative to the manifest's directory;
- `text` (required): the transcript, raw (the Arabic frontend normalizes it);
- `speaker` (required): any string naming the speaker (references are drawn within a speaker);
- `dialect`: a label; `msa`, `gulf`, `egyptian`, `levantine`, `maghrebi`, `iraqi` are known
  (common spellings such as `ar-eg` or `khaleeji` are mapped to them), any other string is kept
  as a lower-case label; default `msa`;
- `gender`: `female`, `male` or absent (Common Voice's `male_masculine` etc. are mapped);
- `split` (optional): `train` or `val`, to fix a speaker's split instead of letting `prepare` choose;
- `duration` (optional): seconds, a hint (validation measures the audio itself);
- `id` (optional): unique name of the utterance; default the `audio` path as written;
- `language` (optional): the tokenizer language tag, default `ar`.

Reading never stops at a bad line: each one is returned as a `ManifestProblem` with its line number.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import DataError

__all__ = ["Utterance", "ManifestProblem", "read_manifest", "write_manifest", "normalize_dialect",
           "normalize_gender", "KNOWN_DIALECTS", "SPLITS"]

KNOWN_DIALECTS = ("msa", "gulf", "egyptian", "levantine", "maghrebi", "iraqi")
SPLITS = ("train", "val")
_DIALECT_ALIASES = {
    "fusha": "msa", "fusha arabic": "msa", "standard": "msa", "modern standard arabic": "msa", "ar": "msa",
    "khaleeji": "gulf", "khaliji": "gulf", "ar-sa": "gulf", "ar-ae": "gulf", "ar-kw": "gulf", "ar-qa": "gulf",
    "saudi": "gulf", "emirati": "gulf", "kuwaiti": "gulf",
    "egy": "egyptian", "masri": "egyptian", "ar-eg": "egyptian", "egypt": "egyptian",
    "shami": "levantine", "ar-sy": "levantine", "ar-lb": "levantine", "ar-jo": "levantine", "ar-ps": "levantine",
    "syrian": "levantine", "lebanese": "levantine", "jordanian": "levantine", "palestinian": "levantine",
    "darija": "maghrebi", "ar-ma": "maghrebi", "ar-dz": "maghrebi", "ar-tn": "maghrebi", "moroccan": "maghrebi",
    "algerian": "maghrebi", "tunisian": "maghrebi",
    "ar-iq": "iraqi", "iraq": "iraqi",
    # Arabic names, as Common Voice contributors write their accent
    "فصحى": "msa", "خليجي": "gulf", "مصري": "egyptian", "شامي": "levantine", "مغربي": "maghrebi", "عراقي": "iraqi",
}
_GENDERS = {"female": "female", "f": "female", "female_feminine": "female", "woman": "female",
            "male": "male", "m": "male", "male_masculine": "male", "man": "male"}
SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val"}


@dataclass(frozen=True)
class Utterance:
    id: str
    audio: Path  # resolved path
    text: str
    speaker: str
    dialect: str = "msa"
    gender: str | None = None
    split: str | None = None
    duration: float | None = None
    language: str = "ar"
    line: int = 0  # 1-based line in the manifest (0: not read from a file)

    def to_json(self, base: Path | None = None) -> dict:
        d = asdict(self)
        d.pop("line")
        audio = self.audio
        if base is not None:
            try:
                audio = audio.relative_to(base)
            except ValueError:
                pass
        d["audio"] = str(audio)
        return {k: v for k, v in d.items() if v is not None}


@dataclass(frozen=True)
class ManifestProblem:
    line: int
    audio: str | None
    reason: str


def normalize_dialect(label) -> str:
    s = " ".join(str(label or "").strip().lower().replace("_", "-").split())
    if not s:
        return "msa"
    return s if s in KNOWN_DIALECTS else _DIALECT_ALIASES.get(s, s)


def normalize_gender(label) -> str | None:
    s = str(label or "").strip().lower()
    return _GENDERS.get(s) if s else None


def _utterance(obj, base: Path, line: int) -> Utterance:
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in ("audio", "text", "speaker") if not isinstance(obj.get(k), str)]
    if missing:
        raise ValueError(f"missing or non-string field(s) {', '.join(missing)}")
    if not obj["speaker"].strip():
        raise ValueError("empty speaker")
    split = obj.get("split")
    if split is not None:
        split = SPLIT_ALIASES.get(str(split).strip().lower())
        if split is None:
            raise ValueError(f"split {obj['split']!r} is not one of {', '.join(SPLITS)}")
    duration = obj.get("duration")
    if duration is not None and (isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration < 0):
        raise ValueError(f"duration {duration!r} is not a non-negative number")
    audio = Path(obj["audio"]).expanduser()
    return Utterance(id=str(obj.get("id") or obj["audio"]), audio=audio if audio.is_absolute() else base / audio,
                     text=obj["text"], speaker=obj["speaker"].strip(), dialect=normalize_dialect(obj.get("dialect")),
                     gender=normalize_gender(obj.get("gender")), split=split,
                     duration=None if duration is None else float(duration),
                     language=str(obj.get("language") or "ar").lower(), line=line)


def read_manifest(path: str | Path) -> tuple[list[Utterance], list[ManifestProblem]]:
    """(utterances, problems); DataError only if the file itself cannot be read. Repeated ids are
    problems (the later lines are dropped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"manifest not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read manifest {path}: {e}") from e
    base = path.resolve().parent
    out, problems, seen = [], [], set()
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append(ManifestProblem(n, None, f"not JSON: {e}"))
            continue
        try:
            u = _utterance(obj, base, n)
        except ValueError as e:
            audio = obj.get("audio") if isinstance(obj, dict) else None
            problems.append(ManifestProblem(n, audio if isinstance(audio, str) else None, str(e)))
            continue
        if u.id in seen:
            problems.append(ManifestProblem(n, str(u.audio), f"id {u.id!r} repeats an earlier line"))
            continue
        seen.add(u.id)
        out.append(u)
    return out, problems


def write_manifest(path: str | Path, utterances) -> Path:
    """Write utterances as JSONL, audio paths relative to the manifest's directory where possible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    with path.open("w", encoding="utf-8") as f:
        for u in utterances:
            f.write(json.dumps(u.to_json(base), ensure_ascii=False) + "\n")
    return path
