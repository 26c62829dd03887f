"""Prepared examples -> a padded `T3Batch`, as the official training forward expects them.

Text rows are [SOT] + ids + [EOT], speech rows [BOS] + codes + [EOS]; both right-padded with the
stop token (padding is never scored). The conditioning prompts of a batch are cut to the shortest
one: the perceiver takes one (B, P) tensor, and a prompt is a prefix of the reference's tokens, so
the cut keeps its start. The exaggeration is the official default, 0.5.
"""

from __future__ import annotations

import torch

from ...models.t3 import T3Config
from ..data.errors import DataError
from .loss import T3Batch

__all__ = ["collate", "EMOTION"]

EMOTION = 0.5


def _pad(rows: list[torch.Tensor], value: int) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([len(r) for r in rows])
    out = torch.full((len(rows), int(lens.max())), value, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out, lens


def collate(examples: list, cfg: T3Config) -> T3Batch:
    if not examples:
        raise ValueError("empty batch")
    text, speech = [], []
    for ex in examples:
        if len(ex.speech_tokens) + 2 > cfg.max_speech_tokens or len(ex.text_tokens) + 2 > cfg.max_text_tokens:
            raise DataError(f"example {ex.id}: {len(ex.text_tokens)} text / {len(ex.speech_tokens)} speech tokens "
                            f"exceed T3's {cfg.max_text_tokens} / {cfg.max_speech_tokens} positions")
        text.append(torch.cat([torch.tensor([cfg.start_text]), ex.text_tokens.long(), torch.tensor([cfg.stop_text])]))
        speech.append(torch.cat([torch.tensor([cfg.start_speech]), ex.speech_tokens.long(),
                                 torch.tensor([cfg.stop_speech])]))
    p = min(len(ex.prompt_speech_tokens) for ex in examples)
    if p < 1:
        raise DataError(f"batch of {[ex.id for ex in examples]}: an example has an empty conditioning prompt")
    t, tl = _pad(text, cfg.stop_text)
    s, sl = _pad(speech, cfg.stop_speech)
    return T3Batch(
        text=t, text_lens=tl, speech=s, speech_lens=sl,
        speaker=torch.stack([ex.ve_embedding.float() for ex in examples]),
        prompt=torch.stack([ex.prompt_speech_tokens[:p].long() for ex in examples]),
        emotion=torch.full((len(examples),), EMOTION),
        dialects=tuple(ex.dialect for ex in examples), ids=tuple(ex.id for ex in examples))
