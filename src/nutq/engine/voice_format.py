"""nutq's own voice file: one safetensors file, tensors plus JSON metadata, no pickle.

The official `conds.pt` is a pickle (torch.save), so loading one runs code from the file; it is fine
for the built-in voice of a trusted checkpoint but not for voices users upload or a cache on disk.
This format holds the same conditionals (`Voice`) as plain tensors and is validated strictly on load:
names, dtypes, shapes, value ranges, finiteness, format version and, when the caller says which
model it runs, the model the voice was made with (a voice's embeddings only mean something to the
weights that computed them).

Layout (format version 1):
    speaker_emb          float32 (1, 256)  voice-encoder embedding (T3)
    prompt_tokens        int64   (1, Tt)   T3 speech prompt, 1 <= Tt <= 150
    gen.prompt_token     int64   (1, Tp)   S3Gen prompt tokens, 1 <= Tp <= 250
    gen.prompt_token_len int64   (1,)      == Tp
    gen.prompt_feat      float32 (1, F, 80) 24 kHz log-mel, F in {2 Tp, 2 Tp + 1}
    gen.embedding        float32 (1, 192)  CAMPPlus x-vector
    __metadata__: {"format": "nutq-voice", "format_version": "1", "meta": JSON}
`meta` holds the exaggeration and a `VoiceMeta` (model identity, clip hash, sample rate, ...).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from ..models.s3gen.model import RefDict
from ..rates import TOKEN_RATE
from .voice import S3GEN_PROMPT_SECONDS, T3_PROMPT_SECONDS, Voice, VoiceError

__all__ = [
    "FORMAT", "FORMAT_VERSION", "VoiceMeta", "VoiceModelMismatch", "save_voice", "load_voice",
    "load_voice_with_meta", "dumps_voice", "loads_voice", "read_voice_meta", "model_fingerprint",
    "voice_nbytes", "atomic_write_bytes",
]

FORMAT = "nutq-voice"
FORMAT_VERSION = 1
CODEBOOK_SIZE = 6561  # S3 tokenizer codes (3^8); prompt tokens index this table
MAX_T3_PROMPT = T3_PROMPT_SECONDS * TOKEN_RATE  # 150
MAX_GEN_PROMPT = S3GEN_PROMPT_SECONDS * TOKEN_RATE  # 250
SPEAKER_DIM = 256
XVECTOR_DIM = 192
N_MELS = 80
# A valid file is ~170 KB (the 10 s mel dominates); refuse to read anything far larger.
MAX_FILE_BYTES = 4 * 1024 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ST_DTYPES = ("F32", "I64")


class VoiceModelMismatch(VoiceError):
    """The voice file was made with other model weights than the caller runs."""


@dataclass(frozen=True)
class VoiceMeta:
    """What is known about where a voice came from. Every field may be unknown (None)."""

    model: str | None = None  # model identity (e.g. `model_fingerprint`) the voice was computed with
    clip_sha256: str | None = None  # sha256 of the reference clip's bytes
    clip_sample_rate: int | None = None
    clip_seconds: float | None = None
    created: float | None = None  # unix time; `save_voice` fills it when unknown
    nutq_version: str | None = None  # the nutq that wrote the file (filled on save)

    def __post_init__(self):
        _check_meta(self)


def _check_meta(m: VoiceMeta) -> None:
    def bad(name, why):
        raise VoiceError(f"voice metadata field {name!r} {why}")

    for name in ("model", "nutq_version"):
        v = getattr(m, name)
        if v is not None and (not isinstance(v, str) or not v or len(v) > 256):
            bad(name, "must be a non-empty string of at most 256 characters")
    if m.clip_sha256 is not None and not (isinstance(m.clip_sha256, str) and _SHA256.fullmatch(m.clip_sha256)):
        bad("clip_sha256", "must be 64 lowercase hex digits")
    if m.clip_sample_rate is not None and (type(m.clip_sample_rate) is not int or m.clip_sample_rate <= 0):
        bad("clip_sample_rate", "must be a positive integer")
    for name in ("clip_seconds", "created"):
        v = getattr(m, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
            bad(name, "must be a finite non-negative number")


# --- tensors <-> Voice ---------------------------------------------------------------------------

# name -> (dtype, shape); None marks a length that varies between voices. Checks run in numpy:
# single-threaded, they cost microseconds, where torch ops on a busy machine can wait on its thread pool.
SPEC: dict[str, tuple[np.dtype, tuple[int | None, ...]]] = {
    "speaker_emb": (np.dtype(np.float32), (1, SPEAKER_DIM)),
    "prompt_tokens": (np.dtype(np.int64), (1, None)),
    "gen.prompt_token": (np.dtype(np.int64), (1, None)),
    "gen.prompt_token_len": (np.dtype(np.int64), (1,)),
    "gen.prompt_feat": (np.dtype(np.float32), (1, None, N_MELS)),
    "gen.embedding": (np.dtype(np.float32), (1, XVECTOR_DIM)),
}
NAMES = tuple(SPEC)


def _voice_arrays(voice: Voice) -> dict[str, np.ndarray]:
    g = voice.gen
    raw = {"speaker_emb": voice.speaker_emb, "prompt_tokens": voice.prompt_tokens, "gen.prompt_token": g.prompt_token,
           "gen.prompt_token_len": g.prompt_token_len, "gen.prompt_feat": g.prompt_feat, "gen.embedding": g.embedding}
    out = {}
    for name, t in raw.items():
        if not isinstance(t, torch.Tensor):
            raise VoiceError(f"voice tensor {name} is {type(t).__name__}, not a tensor")
        want = SPEC[name][0]
        is_float = want.kind == "f"
        if t.is_floating_point() != is_float:
            raise VoiceError(f"voice tensor {name} has dtype {t.dtype}; expected {'float' if is_float else 'integer'}")
        out[name] = np.ascontiguousarray(t.detach().cpu().numpy(), dtype=want)
    return out


def _check_arrays(t: dict[str, np.ndarray], where: str) -> None:
    """Names, dtypes, shapes and values; raises VoiceError naming the first problem."""
    if set(t) != set(NAMES):
        missing, extra = sorted(set(NAMES) - set(t)), sorted(set(t) - set(NAMES))
        raise VoiceError(f"{where}: tensor names differ from a nutq voice (missing {missing}, unexpected {extra})")
    for name, (dtype, shape) in SPEC.items():
        x = t[name]
        if x.dtype != dtype:
            raise VoiceError(f"{where}: {name} has dtype {x.dtype}; expected {dtype}")
        if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
            want = tuple("T" if s is None else s for s in shape)
            raise VoiceError(f"{where}: {name} has shape {tuple(x.shape)}; expected {want}")
        if dtype.kind == "f" and not np.isfinite(x).all():
            raise VoiceError(f"{where}: {name} contains NaN or infinite values")
    tt, tp = t["prompt_tokens"].shape[1], t["gen.prompt_token"].shape[1]
    if not 1 <= tt <= MAX_T3_PROMPT:
        raise VoiceError(f"{where}: {tt} T3 prompt tokens; expected 1..{MAX_T3_PROMPT}")
    if not 1 <= tp <= MAX_GEN_PROMPT:
        raise VoiceError(f"{where}: {tp} S3Gen prompt tokens; expected 1..{MAX_GEN_PROMPT}")
    if int(t["gen.prompt_token_len"][0]) != tp:
        raise VoiceError(f"{where}: gen.prompt_token_len is {int(t['gen.prompt_token_len'][0])}, but there are {tp} tokens")
    # The official embed_ref cuts tokens to mel // 2, so one extra mel frame can occur in its voices.
    nf = t["gen.prompt_feat"].shape[1]
    if nf not in (2 * tp, 2 * tp + 1):
        raise VoiceError(f"{where}: gen.prompt_feat has {nf} frames for {tp} tokens; expected {2 * tp} (or {2 * tp + 1})")
    for name in ("prompt_tokens", "gen.prompt_token"):
        x = t[name]
        if int(x.min()) < 0 or int(x.max()) >= CODEBOOK_SIZE:
            raise VoiceError(f"{where}: {name} has values outside the speech codebook [0, {CODEBOOK_SIZE})")


def voice_nbytes(voice: Voice) -> int:
    """Bytes held by a voice's tensors (what the voice cache budgets)."""
    g = voice.gen
    ts = (voice.speaker_emb, voice.prompt_tokens, g.prompt_token, g.prompt_token_len, g.prompt_feat, g.embedding,
          g.prompt_feat_len)
    return sum(x.numel() * x.element_size() for x in ts if isinstance(x, torch.Tensor))


# --- bytes <-> Voice ------------------------------------------------------------------------------

def dumps_voice(voice: Voice, meta: VoiceMeta | None = None) -> bytes:
    """Serialize a voice; `meta.created` and `meta.nutq_version` are filled in when unknown."""
    from safetensors.numpy import save

    from .. import __version__

    arrays = _voice_arrays(voice)
    _check_arrays(arrays, "voice")
    exaggeration = float(voice.exaggeration)
    if not math.isfinite(exaggeration):
        raise VoiceError(f"voice exaggeration must be finite, got {voice.exaggeration}")
    m = asdict(meta or VoiceMeta())
    m["created"] = m["created"] if m["created"] is not None else time.time()
    m["nutq_version"] = m["nutq_version"] or __version__
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
              "meta": json.dumps({"exaggeration": exaggeration, **m}, sort_keys=True)}
    return save(arrays, metadata=header)


def _parse_header(data: bytes, where: str, total_size: int | None = None) -> tuple[dict, dict]:
    """(tensor entries, metadata) from the safetensors header, after checking the file is one of ours.

    `total_size` is the file size when only a prefix of the file was read (header-only checks)."""
    size = len(data) if total_size is None else total_size

    def not_ours(why: str):
        # Diagnosed only once the header failed to parse: a valid header length can begin with these bytes.
        if data[:4] == b"PK\x03\x04":
            why = "it is a torch zip/pickle file; an official conds.pt is read with nutq.engine.voice.load_conds" \
                  " (trusted files only)"
        elif data[:1] == b"\x80":
            why = "it is a pickle file; nutq never unpickles voice files"
        raise VoiceError(f"{where} is not a nutq voice file: {why}")

    if len(data) < 8:
        not_ours(f"only {len(data)} bytes")
    (n,) = struct.unpack("<Q", data[:8])
    if n > min(size - 8, 1 << 20):
        not_ours(f"header length {n} does not fit a file of {size} bytes (truncated?)")
    if len(data) < 8 + n:
        raise VoiceError(f"{where} is truncated inside its header")
    try:
        header = json.loads(data[8:8 + n])
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (UnicodeDecodeError, ValueError) as e:
        not_ours(f"unreadable header ({e})")
    md = header.pop("__metadata__", None) or {}
    if not isinstance(md, dict):
        not_ours("malformed metadata")
    if md.get("format") != FORMAT:
        raise VoiceError(f"{where} is a safetensors file but not a nutq voice (format {md.get('format')!r})")
    try:
        version = int(md.get("format_version", ""))
    except ValueError:
        raise VoiceError(f"{where}: bad format_version {md.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise VoiceError(f"{where} has voice format version {version}, made by a newer nutq; this one reads"
                         f" version {FORMAT_VERSION}")
    if version < 1:
        raise VoiceError(f"{where}: bad format_version {version}")
    try:
        end = max(int(v["data_offsets"][1]) for v in header.values())
    except (TypeError, KeyError, ValueError, IndexError):
        raise VoiceError(f"{where}: malformed tensor table in the header") from None
    if 8 + n + end != size:
        raise VoiceError(f"{where} is truncated or has trailing bytes ({size} bytes, the header describes {8 + n + end})")
    return header, md


def _meta_from_header(md: dict, where: str) -> tuple[float, VoiceMeta]:
    try:
        raw = json.loads(md.get("meta", ""))
        if not isinstance(raw, dict):
            raise ValueError("not an object")
    except ValueError as e:
        raise VoiceError(f"{where}: unreadable voice metadata ({e})") from None
    ex = raw.get("exaggeration")
    if isinstance(ex, bool) or not isinstance(ex, (int, float)) or not math.isfinite(ex):
        raise VoiceError(f"{where}: metadata lacks a finite exaggeration")
    # Unknown keys are ignored: fields added within a format version stay readable by older nutq.
    known = {f.name: raw.get(f.name) for f in fields(VoiceMeta)}
    try:
        return float(ex), VoiceMeta(**known)
    except VoiceError as e:
        raise VoiceError(f"{where}: {e}") from None


def _check_model(meta: VoiceMeta, model: str | None, where: str) -> None:
    if model is not None and meta.model is not None and meta.model != model:
        raise VoiceModelMismatch(f"{where} was made with model {meta.model!r}; this model is {model!r}."
                                 f" Prepare the voice again from its reference clip")


def loads_voice(data: bytes, *, model: str | None = None, where: str = "voice data") -> tuple[Voice, VoiceMeta]:
    """Parse and validate a voice file's bytes. With `model`, a voice made with another model is refused
    (VoiceModelMismatch); a file that does not record its model is accepted."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    header, md = _parse_header(data, where)
    ex, meta = _meta_from_header(md, where)
    _check_model(meta, model, where)
    if set(header) != set(NAMES):
        raise VoiceError(f"{where}: tensor names differ from a nutq voice ({sorted(header)})")
    bad = {k: v.get("dtype") for k, v in header.items() if v.get("dtype") not in _ST_DTYPES}
    if bad:
        raise VoiceError(f"{where}: unsupported tensor dtypes {bad}")
    try:
        t = load(data)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise VoiceError(f"{where} is corrupt ({e})") from None
    _check_arrays(t, where)
    t = {k: torch.from_numpy(v) for k, v in t.items()}
    gen = RefDict(t["gen.prompt_token"], t["gen.prompt_token_len"], t["gen.prompt_feat"], t["gen.embedding"])
    return Voice(t["speaker_emb"], t["prompt_tokens"], ex, gen), meta


# --- files ----------------------------------------------------------------------------------------

def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename, so readers (and a crash) never
    see a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_voice(voice: Voice, path: str | Path, *, meta: VoiceMeta | None = None) -> None:
    """Write `voice` (atomically) as a nutq voice file."""
    atomic_write_bytes(Path(path), dumps_voice(voice, meta))


def _read(path: Path, header_only: bool = False) -> tuple[bytes, int]:
    """(the file's bytes, or only its length prefix and header; the file size). VoiceError when unreadable."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise VoiceError(f"{path} is {size} bytes; a nutq voice file is at most {MAX_FILE_BYTES}")
        with open(path, "rb") as f:
            if not header_only:
                return f.read(), size
            head = f.read(8)  # the header length (bounded: _parse_header rejects more than 1 MiB)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
            return head + f.read(min(n, 1 << 20)), size
    except FileNotFoundError:
        raise VoiceError(f"voice file not found: {path}") from None
    except IsADirectoryError:
        raise VoiceError(f"{path} is a directory, not a voice file") from None
    except OSError as e:
        raise VoiceError(f"cannot read voice file {path}: {e}") from None


def load_voice_with_meta(path: str | Path, *, model: str | None = None) -> tuple[Voice, VoiceMeta]:
    path = Path(path)
    data, _ = _read(path)
    return loads_voice(data, model=model, where=str(path))


def load_voice(path: str | Path, *, model: str | None = None) -> Voice:
    """Load a nutq voice file (VoiceError on anything wrong; VoiceModelMismatch for another model)."""
    return load_voice_with_meta(path, model=model)[0]


def read_voice_meta(path: str | Path, *, model: str | None = None) -> tuple[float, VoiceMeta]:
    """(exaggeration, meta) from the header alone: format, version, tensor table and file length are
    checked, tensor values are not. Cheap enough to scan a store of many voices at start-up."""
    path = Path(path)
    prefix, size = _read(path, header_only=True)
    header, md = _parse_header(prefix, str(path), total_size=size)
    if set(header) != set(NAMES):
        raise VoiceError(f"{path}: tensor names differ from a nutq voice ({sorted(header)})")
    ex, meta = _meta_from_header(md, str(path))
    _check_model(meta, model, str(path))
    return ex, meta


# --- model identity -------------------------------------------------------------------------------

def _weights_digest(h, path: Path) -> None:
    """Feed a cheap content digest of a torch checkpoint into `h`.

    torch.save writes a zip whose central directory (at the end) lists a CRC-32 for every stored
    tensor, so hashing (entry name, CRC, size) identifies the weights without reading them: ~15 ms
    for the 1 GB s3gen.pt instead of seconds. The archive-name prefix and the random per-save
    `serialization_id` are left out so that re-saving the same weights keeps the fingerprint."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename.split("/", 1)[-1]
                if name != ".data/serialization_id":
                    h.update(f"{name}:{info.CRC}:{info.file_size};".encode())
            return
    except zipfile.BadZipFile:
        pass
    # A safetensors file (its JSON header, with every name, shape and offset, comes first) or a
    # legacy torch file: size plus its first and last MiB.
    size = path.stat().st_size
    with open(path, "rb") as f:
        h.update(f"{size};".encode() + f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read())


def model_fingerprint(model_dir: str | Path, meanflow_file: str | Path | None = None) -> str:
    """Identity of the weights a voice depends on (ve.pt and s3gen.pt, plus a nutq sidecar's sizes).

    T3 is left out: a voice's tensors are computed by the voice encoder and S3Gen only.
    `meanflow_file`: the voice is prepared with the distilled decoder's S3Gen (its own S3 tokenizer
    and CAMPPlus weights), which then replaces s3gen.pt in the fingerprint, so a voice made for one
    decoder is never taken for the other's."""
    from ..checkpoints import files as ckfiles

    root = Path(model_dir)
    h = hashlib.sha256()
    s3gen = (ckfiles.MEANFLOW_FILE, Path(meanflow_file)) if meanflow_file else (ckfiles.S3GEN_FILE, root / ckfiles.S3GEN_FILE)
    for name, path in ((ckfiles.VE_FILE, root / ckfiles.VE_FILE), s3gen):
        h.update(name.encode() + b"\0")
        _weights_digest(h, path)
    sidecar = root / ckfiles.SIDECAR_FILE
    if sidecar.exists():
        h.update(sidecar.read_bytes())
    return f"ckpt-{h.hexdigest()[:20]}"
