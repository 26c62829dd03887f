"""Speech-token sampling as the official multilingual `generate()` does it, on device.

Order per step (the official one, see docs/model.md "Sampling"): CFG mix -> alignment guard (EOS suppress/force) ->
repetition penalty over every id emitted so far, BOS included -> temperature -> min_p -> top_p
(-> top_k, ours, off by default) -> softmax -> multinomial. The processors are pure tensor
functions over (B, V) logits so a batch of sessions can share one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SamplingParams", "cfg_mix", "repetition_penalty", "min_p_filter", "top_p_filter", "top_k_filter",
           "sampling_logits", "sample"]


@dataclass(frozen=True)
class SamplingParams:
    """Official defaults; `greedy=True` takes the argmax (deterministic tests, debugging)."""

    cfg_weight: float = 0.5
    temperature: float = 0.8
    repetition_penalty: float = 2.0
    min_p: float = 0.05
    top_p: float = 1.0
    top_k: int = 0  # 0 = off (the official loop has no top_k)
    max_new_tokens: int = 1000
    greedy: bool = False
    # Never stop on EOS, so exactly max_new_tokens are generated (benchmarks with a fixed length;
    # like vLLM's ignore_eos). The plain reference loop does not support it.
    ignore_eos: bool = False

    def __post_init__(self):
        if self.temperature <= 0 and not self.greedy:
            raise ValueError("temperature must be > 0 (use greedy=True for argmax decoding)")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if not 0.0 <= self.min_p <= 1.0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError("min_p must be in [0, 1] and top_p in (0, 1]")
        if self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError("top_k must be >= 0 and max_new_tokens >= 1")


def cfg_mix(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    return cond + weight * (cond - uncond)


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """`seen` (B, V) bool: ids emitted so far. Negative logits x penalty, positive / penalty."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below min_p x the top probability (the top one stays)."""
    if min_p <= 0.0:
        return logits
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < threshold, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set whose probability reaches top_p (at least one)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= (1.0 - top_p)
    remove_sorted[..., -1] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = logits.topk(top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def sampling_logits(logits: torch.Tensor, seen: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Guarded CFG-mixed logits (B, V) -> the logits whose softmax is sampled."""
    x = repetition_penalty(logits, seen, p.repetition_penalty)
    if p.temperature != 1.0 and not p.greedy:
        x = x / p.temperature
    x = min_p_filter(x, p.min_p)
    x = top_p_filter(x, p.top_p)
    return top_k_filter(x, p.top_k)


def sample(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) processed logits -> (B,) ids, without a host sync."""
    if p.greedy:
        return logits.argmax(dim=-1)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
