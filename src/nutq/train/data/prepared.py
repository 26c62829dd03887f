"""The prepared dataset: what `nutq data prepare` writes and every trainer reads.

Layout of a prepared directory::

    PREPARED/prepared.json                      the index (below)
    PREPARED/{train,val}/shard-NNNNN.safetensors  examples, one file per shard

`prepared.json`: `format` ("nutq-prepared"), `version` (1), `complete` (false until the last shard
is written), `checkpoint` (`checkpoint_fingerprint` of the model directory the tokens and
embeddings were computed with), `settings` (how it was prepared), `splits` (per split: `shards`,
a list of `{"name", "count"}` in order, `count`, `speakers`, `seconds`) and `skipped` (utterances
left out, each with its reason).

A shard is one safetensors file. Variable-length fields are stored concatenated with an offsets
vector (`<field>` and `<field>.offsets`, N+1 int64 entries: example i is rows
`offsets[i]:offsets[i+1]`); fixed-size fields are stacked (N, D). Per-example strings (id,
speaker, dialect, gender, language, text, ref_id) are in the header metadata, one key
`nutq-prepared-shard` holding `{"version": 1, "examples": [...]}`. One file per shard, written to a temporary name and renamed, so a shard that exists is
complete (what makes `prepare` resumable).

Batching and padding belong to each trainer; this module only reads examples.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import DataError

__all__ = ["PreparedExample", "PreparedDataset", "write_prepared_fixture", "write_shard", "read_shard_meta",
           "checkpoint_fingerprint", "FORMAT", "VERSION", "INDEX_FILE", "SPLITS"]

FORMAT = "nutq-prepared"
VERSION = 1
INDEX_FILE = "prepared.json"
SPLITS = ("train", "val")
_SHARD_KEY = "nutq-prepared-shard"
_STRINGS = ("id", "speaker", "dialect", "gender", "language", "text", "ref_id")
_RAGGED = {"text_tokens": torch.int64, "speech_tokens": torch.int64, "prompt_speech_tokens": torch.int64,
           "flow_prompt_tokens": torch.int64, "flow_prompt_mel": torch.float32}
_STACKED = {"ve_embedding": torch.float32, "xvector": torch.float32}


@dataclass(frozen=True)
class PreparedExample:
    id: str
    speaker: str
    dialect: str
    gender: str | None
    language: str  # the tokenizer's language tag, e.g. "ar"
    text: str  # the normalized text exactly as T3 reads it (final punctuation included)
    text_tokens: torch.Tensor  # (L,) int64 MTL ids, language tag first, no start/stop text tokens
    speech_tokens: torch.Tensor  # (S,) int64 S3 tokens (25 Hz) of this utterance, no start/stop
    ve_embedding: torch.Tensor  # (256,) float32 voice-encoder embedding of this utterance
    ref_id: str  # the other utterance of the same speaker the prompts below come from
    prompt_speech_tokens: torch.Tensor  # (P,) int64 T3 conditioning prompt of the reference
    flow_prompt_tokens: torch.Tensor  # (Pf,) int64 S3Gen prompt tokens of the reference
    flow_prompt_mel: torch.Tensor  # (2*Pf, 80) float32 24 kHz log-mel of the reference
    xvector: torch.Tensor  # (192,) float32 CAMPPlus embedding of the reference


def checkpoint_fingerprint(model_dir: str | Path) -> str:
    """Identity of what prepared data depends on: the voice encoder and S3Gen weights (as voice
    files record them) and the text tokenizer's vocabulary."""
    from ...checkpoints import files as ckfiles
    from ...engine.voice_format import model_fingerprint

    root = Path(model_dir)
    tok = root / ckfiles.TOKENIZER_FILE
    if not tok.is_file():
        raise DataError(f"{root} has no {ckfiles.TOKENIZER_FILE}: not a checkpoint directory")
    h = hashlib.sha256(model_fingerprint(root).encode() + b"\0" + tok.read_bytes())
    return f"prep-{h.hexdigest()[:20]}"


def write_shard(path: str | Path, examples: list[PreparedExample]) -> None:
    """Write one shard atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    if not examples:
        raise ValueError("a shard needs at least one example")
    tensors: dict[str, torch.Tensor] = {}
    for name, dtype in _RAGGED.items():
        parts = [getattr(e, name).to(dtype).contiguous() for e in examples]
        lens = torch.tensor([0] + [p.shape[0] for p in parts], dtype=torch.int64)
        tensors[name] = torch.cat(parts).contiguous()
        tensors[f"{name}.offsets"] = lens.cumsum(0)
    for name, dtype in _STACKED.items():
        tensors[name] = torch.stack([getattr(e, name).to(dtype).reshape(-1) for e in examples]).contiguous()
    # One metadata key: safetensors writes several in no fixed order, and shards must be byte-identical
    # from run to run.
    meta = {_SHARD_KEY: json.dumps({"version": VERSION, "examples": [{k: getattr(e, k) for k in _STRINGS} for e in examples]},
                                   ensure_ascii=False)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def read_shard_meta(path: str | Path) -> list[dict]:
    """The per-example strings of a shard (cheap: reads only the header); DataError if unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        if _SHARD_KEY not in meta:
            raise DataError(f"{path} is not a prepared shard")
        return json.loads(meta[_SHARD_KEY])["examples"]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: same meaning to the user
        raise DataError(f"unreadable prepared shard {path}: {e}") from e


class _Shard:
    """One shard held in memory (all its tensors are small next to the audio they came from)."""

    def __init__(self, path: Path):
        from safetensors.torch import load_file

        self.meta = read_shard_meta(path)
        self.t = load_file(str(path))

    def example(self, i: int) -> PreparedExample:
        fields = dict(self.meta[i])
        for name in _RAGGED:
            off = self.t[f"{name}.offsets"]
            fields[name] = self.t[name][int(off[i]):int(off[i + 1])]
        for name in _STACKED:
            fields[name] = self.t[name][i]
        return PreparedExample(**fields)


class PreparedDataset(torch.utils.data.Dataset):
    """Map-style dataset over one split of a prepared directory (works with torch DataLoader).

    Shards are loaded on first use and the most recent few kept, so sequential or shard-local
    access stays cheap while a large dataset never has to fit in memory at once."""

    CACHE = 4

    def __init__(self, root: str | Path, split: str = "train"):
        self.root = Path(root)
        index = self.root / INDEX_FILE
        try:
            self.meta: dict = json.loads(index.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{self.root} is not a prepared dataset (no {INDEX_FILE}); run `nutq data prepare`") from None
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"unreadable {index}: {e}") from e
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise DataError(f"{index}: format {self.meta.get('format')!r} version {self.meta.get('version')!r}; "
                            f"this nutq reads {FORMAT!r} version {VERSION}")
        if not self.meta.get("complete"):
            raise DataError(f"{self.root} is incomplete (an interrupted prepare?); rerun `nutq data prepare` to finish it")
        splits = self.meta.get("splits", {})
        if split not in splits:
            raise DataError(f"{self.root} has no split {split!r} (it has {', '.join(sorted(splits)) or 'none'})")
        self.split = split
        self._shards = [self.root / split / s["name"] for s in splits[split]["shards"]]
        counts = [int(s["count"]) for s in splits[split]["shards"]]
        self._starts = torch.tensor([0] + counts).cumsum(0).tolist()
        self._cache: dict[int, _Shard] = {}

    def __len__(self) -> int:
        return self._starts[-1]

    def __getitem__(self, i: int) -> PreparedExample:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} examples")
        i %= n
        k = _bisect(self._starts, i)
        return self._shard(k).example(i - self._starts[k])

    def _shard(self, k: int) -> _Shard:
        sh = self._cache.pop(k, None)
        if sh is None:
            sh = _Shard(self._shards[k])
            if len(sh.meta) != self._starts[k + 1] - self._starts[k]:
                raise DataError(f"{self._shards[k]} holds {len(sh.meta)} examples; {INDEX_FILE} says "
                                f"{self._starts[k + 1] - self._starts[k]}")
        self._cache[k] = sh  # most recently used last
        while len(self._cache) > self.CACHE:
            self._cache.pop(next(iter(self._cache)))
        return sh

    @property
    def speakers(self) -> list[str]:
        return list(self.meta["splits"][self.split]["speakers"])

    def check_checkpoint(self, model_dir: str | Path) -> None:
        """DataError unless this data was prepared with the same voice encoder, S3Gen and tokenizer."""
        fp = checkpoint_fingerprint(model_dir)
        if fp != self.meta.get("checkpoint"):
            raise DataError(f"{self.root} was prepared with checkpoint {self.meta.get('checkpoint')}, "
                            f"not {model_dir} ({fp}); prepare it again for this checkpoint")


def _bisect(starts: list[int], i: int) -> int:
    import bisect

    return bisect.bisect_right(starts, i) - 1


def write_index(root: str | Path, meta: dict) -> None:
    path = Path(root) / INDEX_FILE
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


_FIXTURE_TEXTS = ("مرحبا بكم في نطق.", "كيف حالك اليوم؟", "الطقس جميل في الصباح.", "شكرا جزيلا لكم.",
                  "هذا اختبار قصير.", "أين المكتبة؟", "نلتقي غدا إن شاء الله.", "القهوة ساخنة جدا.")
_FIXTURE_DIALECTS = ("msa", "egyptian", "gulf", "levantine")


def write_prepared_fixture(root, *, checkpoint_dir, n_train: int = 8, n_val: int = 4, speakers: int = 2,
                           seed: int = 0) -> Path:
    """A small prepared dataset of random but valid examples, for trainer tests that should not run
    the real `prepare`: text ids are the checkpoint tokenizer's encoding of real Arabic sentences,
    speech and prompt tokens are inside the S3 codebook, shapes are those `prepare` writes. Each
    split has `speakers` speakers of its own (speaker-disjoint, as `prepare` makes them)."""
    from ...checkpoints import files as ckfiles
    from ...models.registry import configs_from_sidecar
    from ...text.tokenizer import MTLTokenizer

    files = ckfiles.resolve(checkpoint_dir)
    t3 = configs_from_sidecar(files.sidecar)["t3"]
    tok = MTLTokenizer.from_file(files.tokenizer)
    g = torch.Generator().manual_seed(seed)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if speakers < 1 or n_train < 2 * speakers or n_val < 2 * speakers:
        raise ValueError("every fixture speaker needs at least two utterances per split (one is the other's reference)")
    splits = {}
    for split, n in (("train", n_train), ("val", n_val)):
        spk_names = [f"{split}-spk{k}" for k in range(speakers)]
        ids = [f"{split}-{i:04d}" for i in range(n)]
        owner = [spk_names[i % speakers] for i in range(n)]
        examples = []
        for i in range(n):
            same = [j for j in range(n) if owner[j] == owner[i] and j != i]
            ref = same[int(torch.randint(len(same), (1,), generator=g))]
            text = _FIXTURE_TEXTS[i % len(_FIXTURE_TEXTS)]
            s_len, pf = int(torch.randint(20, 80, (1,), generator=g)), int(torch.randint(25, 100, (1,), generator=g))
            ve = torch.randn(t3.speaker_dim, generator=g)
            examples.append(PreparedExample(
                id=ids[i], speaker=owner[i], dialect=_FIXTURE_DIALECTS[spk_names.index(owner[i]) % len(_FIXTURE_DIALECTS)],
                gender=("female", "male")[spk_names.index(owner[i]) % 2], language="ar", text=text,
                text_tokens=torch.tensor(tok.encode(text, "ar"), dtype=torch.int64),
                speech_tokens=torch.randint(0, t3.start_speech, (s_len,), generator=g),
                ve_embedding=ve / ve.norm(), ref_id=ids[ref],
                prompt_speech_tokens=torch.randint(0, t3.start_speech, (t3.prompt_len,), generator=g),
                flow_prompt_tokens=torch.randint(0, t3.start_speech, (pf,), generator=g),
                flow_prompt_mel=-5.0 + 2.0 * torch.randn(2 * pf, 80, generator=g),
                xvector=torch.randn(192, generator=g)))
        half = (n + 1) // 2  # two shards per split, so readers are tested across shard boundaries
        shards = []
        for k, chunk in enumerate((examples[:half], examples[half:])):
            if chunk:
                name = f"shard-{k:05d}.safetensors"
                write_shard(root / split / name, chunk)
                shards.append({"name": name, "count": len(chunk)})
        splits[split] = {"shards": shards, "count": n, "speakers": spk_names,
                         "seconds": float(sum(e.speech_tokens.numel() for e in examples) / 25)}
    write_index(root, {"format": FORMAT, "version": VERSION, "complete": True,
                       "checkpoint": checkpoint_fingerprint(files.root),
                       "settings": {"fixture": True, "seed": seed}, "splits": splits, "skipped": []})
    return root
