"""What `prepare` will write, decided before any model runs: splits, references and shards.

- Splits are speaker-disjoint. A speaker keeps the split its manifest lines give (`split`);
  the others are drawn per dialect, in an order fixed by hashing (seed, speaker), until the
  validation split holds `val_fraction` of the dialect's audio, so every dialect with two or more
  speakers has validation speakers (per-dialect evaluation needs them) and keeps one in train.
- References: each speaker's clips are shuffled (seeded) and cut into blocks of at most
  `BLOCK` clips (never a block of one); an utterance's reference is another clip of its block,
  drawn with the seed. Blocks never straddle shards, so a shard's conditioning is computed from
  clips of the shard only and each clip is processed once.
- Shards: blocks packed in order into shards of about `shard_size` utterances.

Everything is a pure function of the usable utterances and the settings, which is what makes
prepare deterministic and resumable.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from dataclasses import dataclass

__all__ = ["PlannedItem", "plan_splits", "plan_shards", "BLOCK"]

BLOCK = 32


@dataclass(frozen=True)
class PlannedItem:
    index: int  # position in the manifest's usable utterances
    id: str
    speaker: str
    ref_index: int
    ref_id: str


def _key(seed: int, name: str) -> str:
    return hashlib.sha256(f"{seed}\0{name}".encode()).hexdigest()


def plan_splits(items: list[dict], val_fraction: float, seed: int) -> tuple[dict[str, str], list[str]]:
    """{speaker: split} and warnings. `items`: dicts with speaker, dialect, seconds, split (or None)."""
    warnings = []
    fixed: dict[str, str] = {}
    dialects: dict[str, Counter] = defaultdict(Counter)
    seconds: Counter = Counter()
    for it in items:
        spk = it["speaker"]
        dialects[spk][it["dialect"]] += 1
        seconds[spk] += it["seconds"]
        if it.get("split"):
            if spk in fixed and fixed[spk] != it["split"]:
                warnings.append(f"speaker {spk!r} has lines in both splits; all its clips go to {fixed[spk]} "
                                "(splits are speaker-disjoint)")
            fixed.setdefault(spk, it["split"])
    by_dialect: dict[str, list[str]] = defaultdict(list)
    for spk, c in dialects.items():
        by_dialect[max(sorted(c), key=c.__getitem__)].append(spk)
    out = dict(fixed)
    for dialect, speakers in sorted(by_dialect.items()):
        total = sum(seconds[s] for s in speakers)
        val = sum(seconds[s] for s in speakers if out.get(s) == "val")
        free = sorted((s for s in speakers if s not in fixed), key=lambda s: _key(seed, s))
        n_train = sum(1 for s in speakers if out.get(s) == "train")
        for spk in free:
            left = sum(1 for s in free if s not in out)
            wants_val = val_fraction > 0 and (val < val_fraction * total or val == 0)
            if wants_val and (n_train > 0 or left > 1):
                out[spk], val = "val", val + seconds[spk]
            else:
                out[spk] = "train"
                n_train += 1
    if val_fraction > 0 and "val" not in out.values() and len(out) > 1:
        # every dialect has a single speaker: hold one out anyway, or nothing could be evaluated
        spk = min((s for s in out if s not in fixed), key=lambda s: _key(seed, s), default=None)
        if spk is not None:
            out[spk] = "val"
            warnings.append(f"no dialect has two speakers; speaker {spk!r} is the validation split")
    return out, warnings


def _blocks(indices: list[int], rng: random.Random) -> list[list[int]]:
    rng.shuffle(indices)
    blocks = [indices[i:i + BLOCK] for i in range(0, len(indices), BLOCK)]
    if len(blocks) > 1 and len(blocks[-1]) < 2:
        blocks[-2].extend(blocks.pop())
    return blocks


def plan_shards(items: list[dict], speaker_split: dict[str, str], shard_size: int, seed: int
                ) -> dict[str, list[list[PlannedItem]]]:
    """{split: [shard: [PlannedItem]]}; speakers with a single clip must be filtered out before."""
    by_speaker: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        by_speaker[it["speaker"]].append(i)
    out: dict[str, list[list[PlannedItem]]] = {"train": [], "val": []}
    for split in ("train", "val"):
        current: list[PlannedItem] = []
        for spk in sorted(s for s in by_speaker if speaker_split[s] == split):
            rng = random.Random(_key(seed, spk))
            for block in _blocks(sorted(by_speaker[spk], key=lambda i: items[i]["id"]), rng):
                if len(block) < 2:
                    raise ValueError(f"speaker {spk!r} has a single clip: no reference for it")
                planned = []
                for i in block:
                    ref = rng.choice([j for j in block if j != i])
                    planned.append(PlannedItem(i, items[i]["id"], spk, ref, items[ref]["id"]))
                if current and len(current) + len(planned) > shard_size:
                    out[split].append(current)
                    current = []
                current.extend(planned)
        if current:
            out[split].append(current)
    return out
