"""The target's own generations as draft training data (`nutq train draft --generated K`).

A draft is used on what the target generates, not on the corpus: at inference every context is the
target's own earlier tokens, drawn with the repetition penalty counting them. Teacher-forcing the
corpus' tokens trains the draft on other contexts. With real weights the two are close (the target
was trained to produce such tokens); with random weights they are not (measured: a draft trained on
the stand-in corpus accepted 2 % of its tokens while decoding; BENCHMARKS.md). So the trainer can add
sequences sampled from the target itself, from each utterance's own text and voice prompts, with the
run's sampling settings (the plain reference loop, `engine.generate.iter_speech_tokens`, without
the alignment guard: the guard only edits EOS).

Generation is seeded, and the sequences are cached in the run directory under a key of everything
that made them, so a resumed run trains on exactly the same data and does not sample it again.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ...engine.generate import iter_speech_tokens
from ...engine.sampling import SamplingParams
from ...models.t3 import T3

__all__ = ["generated_examples", "Examples"]

CACHE_FORMAT = 1


class Examples(torch.utils.data.Dataset):
    """Several map-style example sets read as one (the corpus and its generations)."""

    def __init__(self, *parts):
        self.parts = [p for p in parts if len(p)]

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} examples")
        i %= len(self)
        for p in self.parts:
            if i < len(p):
                return p[i]
            i -= len(p)
        raise AssertionError("unreachable")


def generated_examples(t3: T3, dataset, per_example: int, max_speech: int, params: SamplingParams, *, seed: int,
                       cache: str | Path, source: str, progress: bool | None = None) -> list:
    """`per_example` target generations (at most `max_speech` tokens, EOS left out) for every
    example of `dataset`, each returned as that example with its speech tokens replaced. `source`
    names what the dataset and target are (it is part of the cache key with the rest)."""
    cache = Path(cache)
    key = {"format": CACHE_FORMAT, "source": source, "examples": [dataset[i].id for i in range(len(dataset))],
           "per_example": per_example, "max_speech": max_speech, "params": repr(params), "seed": seed}
    if cache.exists():
        saved = torch.load(cache, weights_only=True)
        if saved.get("key") == key:
            return [dataclasses.replace(dataset[i], speech_tokens=tok) for i, tok in saved["items"]]
    from tqdm import tqdm

    cfg = t3.cfg
    dev = t3.speech_head.weight.device
    gen = torch.Generator(dev).manual_seed(seed)
    run_params = dataclasses.replace(params, max_new_tokens=max_speech)
    items = []
    with torch.inference_mode():
        for i in tqdm(range(len(dataset)), desc="sampling the target", unit="utt", dynamic_ncols=True,
                      disable=None if progress is None else not progress):
            ex = dataset[i]
            cond = t3.conditioning(ex.ve_embedding.reshape(1, -1).to(dev), ex.prompt_speech_tokens.reshape(1, -1).to(dev),
                                   0.5)
            text = torch.cat([torch.tensor([cfg.start_text]), ex.text_tokens, torch.tensor([cfg.stop_text])])
            for _ in range(per_example):
                toks = [s.token for s in iter_speech_tokens(t3, cond, text, run_params, guard=None, generator=gen)]
                toks = [t for t in toks if t != cfg.stop_speech]
                if toks:  # an immediate EOS gives nothing to learn from
                    items.append((i, torch.tensor(toks, dtype=torch.int64)))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(cache.suffix + ".tmp")
    torch.save({"key": key, "items": items}, tmp)
    tmp.replace(cache)
    return [dataclasses.replace(dataset[i], speech_tokens=tok) for i, tok in items]
