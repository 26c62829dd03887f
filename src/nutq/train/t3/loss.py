"""T3's training forward and cross-entropy losses, as the official `T3.forward`/`T3.loss` define them.

The sequence is the official one: [conditioning | text | speech], each row right-padded inside its
segment, so the speech segment of every row starts after the longest text of the batch (the
padding sits between a short row's text and its speech and is attended to, as in the official
forward). Text and speech have their own learned positions from 0, the prompt is embedded with
speech positions 0..P-1, attention is causal and unmasked otherwise. Latents past a row's length
are zeroed before the heads, so their logits are exactly 0, as the official forward returns them.

Two objectives share that forward (`objective=`):

- "official": the official `T3.loss()` token alignment: the logits at token i's position are scored
  against token i itself, ignoring positions past each row's length. In chatterbox-tts 0.1.7 that
  function cannot run as shipped: it passes (B, L, V) logits to `F.cross_entropy`, which wants the
  classes on dim 1, and fails with a shape error. This objective is that function with the class
  dimension where `F.cross_entropy` wants it, nothing else changed (the parity generator runs the
  official code with exactly that one fix). Because attention is causal, position i sees token i,
  so this scores copying the input: useful as a reference number, harmful to train on.
- "next" (what `nutq train t3` optimizes): next-token prediction, the alignment the official
  inference uses (the logits at the last position choose the next token): positions 0..n-2 of
  each row predict tokens 1..n-1, so the speech BOS position predicts the first speech token and
  the last speech token's position predicts EOS. Same masking, same token-weighted means.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...models.llama import LlamaConfig
from ...models.t3 import T3

__all__ = ["T3Batch", "T3Losses", "OBJECTIVES", "forward_logits", "t3_losses"]

OBJECTIVES = ("next", "official")
IGNORE = -100


@dataclass
class T3Batch:
    """A padded batch. Text rows carry SOT..EOT and speech rows BOS..EOS (pads after them)."""

    text: torch.Tensor  # (B, Lt) int64
    text_lens: torch.Tensor  # (B,)
    speech: torch.Tensor  # (B, Ls) int64
    speech_lens: torch.Tensor  # (B,)
    speaker: torch.Tensor  # (B, 256) float32
    prompt: torch.Tensor  # (B, P) int64 conditioning prompt (equal length within a batch)
    emotion: torch.Tensor  # (B,) exaggeration
    dialects: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()

    def to(self, device) -> "T3Batch":
        move = {k: getattr(self, k).to(device) for k in
                ("text", "text_lens", "speech", "speech_lens", "speaker", "prompt", "emotion")}
        return T3Batch(**move, dialects=self.dialects, ids=self.ids)

    @property
    def size(self) -> int:
        return self.text.shape[0]


@dataclass
class T3Losses:
    text: torch.Tensor  # scalar: mean CE over the batch's scored text tokens
    speech: torch.Tensor  # scalar: mean CE over the scored speech tokens
    # Per-row sums and counts (detached), for per-dialect means over many batches.
    text_sum: torch.Tensor
    text_count: torch.Tensor
    speech_sum: torch.Tensor
    speech_count: torch.Tensor
    speech_correct: torch.Tensor  # per-row count of scored speech tokens whose argmax is the target

    @property
    def speech_accuracy(self) -> float:
        return float(self.speech_correct.sum() / self.speech_count.sum().clamp(min=1))


def _valid(lens: torch.Tensor, length: int) -> torch.Tensor:
    return torch.arange(length, device=lens.device)[None] < lens[:, None]  # (B, L)


class _TrainingKV:
    """Per-layer key/value buffers for one full-sequence forward with autograd.

    The backbone's attention writes keys/values into the cache and reads them back. A `KVCache`
    keeps all layers in one tensor, so a later layer's write would bump the version of the views
    an earlier layer saved for backward; separate tensors per layer keep every saved view valid.
    """

    def __init__(self, cfg: LlamaConfig, batch: int, length: int, *, device, dtype):
        shape = (batch, cfg.num_kv_heads, length, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.max_len = length


def forward_logits(model: T3, batch: T3Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(text_logits (B, Lt, Vt), speech_logits (B, Ls, Vs)) of the official training forward."""
    dev = model.speech_emb.weight.device
    b = batch.to(dev)
    cond = model.conditioning(b.speaker, b.prompt, b.emotion)  # (B, len_cond, C)
    Lt, Ls = b.text.shape[1], b.speech.shape[1]
    text = model.text_emb(b.text) + model.text_pos_emb(torch.arange(Lt, device=dev))
    speech = model.embed_speech(b.speech, torch.arange(Ls, device=dev))
    embeds = torch.cat([cond, text.to(cond.dtype), speech.to(cond.dtype)], dim=1)
    T = embeds.shape[1]
    cache = _TrainingKV(model.cfg.llama, b.size, T, device=dev, dtype=embeds.dtype)
    hidden = model.tfmr(embeds, torch.arange(T, device=dev), cache, kv_len=T)
    n = cond.shape[1]
    text_h = hidden[:, n:n + Lt] * _valid(b.text_lens, Lt)[..., None]
    speech_h = hidden[:, n + Lt:] * _valid(b.speech_lens, Ls)[..., None]
    return model.text_head(text_h), model.speech_head(speech_h)


def _scored(logits: torch.Tensor, tokens: torch.Tensor, lens: torch.Tensor, objective: str):
    """(logits, targets) aligned for `objective`; targets are IGNORE where nothing is scored."""
    targets = tokens.masked_fill(~_valid(lens, tokens.shape[1]), IGNORE)
    if objective == "next":
        return logits[:, :-1], targets[:, 1:]
    return logits, targets


def _ce(logits: torch.Tensor, targets: torch.Tensor):
    """(mean over scored tokens, per-row sum (detached), per-row count)."""
    per_tok = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
    valid = targets != IGNORE
    count = valid.sum(dim=1)
    total = per_tok.sum()
    return total / count.sum().clamp(min=1), per_tok.detach().sum(dim=1), count


def t3_losses(model: T3, batch: T3Batch, objective: str = "next") -> T3Losses:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    text_logits, speech_logits = forward_logits(model, batch)
    dev = text_logits.device
    tl, tt = _scored(text_logits, batch.text.to(dev), batch.text_lens.to(dev), objective)
    sl, st = _scored(speech_logits, batch.speech.to(dev), batch.speech_lens.to(dev), objective)
    text, text_sum, text_count = _ce(tl, tt)
    speech, speech_sum, speech_count = _ce(sl, st)
    correct = ((sl.detach().argmax(-1) == st) & (st != IGNORE)).sum(dim=1)
    return T3Losses(text, speech, text_sum, text_count, speech_sum, speech_count, correct)
