"""The plain (reference) T3 decode loop for one utterance: prefill, then one token per step.

This is the path every optimised one (graph-captured, batched, speculative) is tested against.
It mirrors the official loop: CFG rows (cond, uncond), BOS fed twice at speech position 0, the
k-th sampled token fed back at speech position k+1, stop on EOS, at most `max_new_tokens`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from ..models.t3 import T3
from .alignment import OFFICIAL, AlignmentGuard, GuardConfig
from .sampling import SamplingParams, cfg_mix, sample, sampling_logits

__all__ = ["StepInfo", "GenerationResult", "iter_speech_tokens", "generate_speech_tokens"]


@dataclass
class StepInfo:
    step: int
    token: int
    text_position: int
    probs: torch.Tensor | None = None  # the distribution sampled from (only with record_probs)


@dataclass
class GenerationResult:
    tokens: list[int]  # valid S3 ids only (EOS and ids >= 6561 dropped)
    steps: list[StepInfo] = field(default_factory=list)
    stopped_on_eos: bool = False
    guard_counts: dict[str, int] = field(default_factory=dict)


def iter_speech_tokens(
    t3: T3,
    cond: torch.Tensor,
    text_ids: torch.Tensor,
    params: SamplingParams = SamplingParams(),
    *,
    guard: GuardConfig | None = OFFICIAL,
    generator: torch.Generator | None = None,
    forced_tokens: list[int] | None = None,
    record_probs: bool = False,
    stats: dict | None = None,
) -> Iterator[StepInfo]:
    """Yield one StepInfo per sampled token (EOS included, as the last one).

    `cond` (1, len_cond, C) from `T3.conditioning`; `text_ids` (T,) with SOT/EOT. `forced_tokens`
    replays given ids instead of sampling (parity tests). `stats`, if given, receives the guard's
    decision counts when the loop ends.
    """
    if params.ignore_eos:
        raise ValueError("the plain reference loop follows the official one and always stops on EOS")
    cfg = t3.cfg
    dev = t3.speech_head.weight.device
    text_ids = text_ids.to(dev)
    with torch.inference_mode():
        embeds = t3.prefill_embeds(cond.to(dev), text_ids, cfg_rows=True)  # (2, L, C)
        L = embeds.shape[1]
        cache = t3.new_cache(batch=2, max_len=L + params.max_new_tokens + 1)
        probes = guard.heads if guard is not None else ()
        g = AlignmentGuard((cfg.len_cond, cfg.len_cond + text_ids.shape[-1]), guard) if guard else None
        out = t3.forward_hidden(embeds, 0, cache, probes=probes)
        seen = torch.zeros(1, cfg.speech_vocab, dtype=torch.bool, device=dev)
        seen[0, cfg.start_speech] = True  # the official penalty counts the BOS as emitted
        fed = cfg.start_speech
        try:
            for step in range(params.max_new_tokens):
                h, attn = out if probes else (out, None)
                logits = t3.speech_logits(h[:, -1]).float()  # (2, V)
                mixed = cfg_mix(logits[0:1], logits[1:2], params.cfg_weight)
                position = 0
                if g is not None:
                    decision = g.observe(attn, fed)
                    mixed = AlignmentGuard.apply(mixed, decision, cfg.stop_speech)
                    position = decision.text_position
                proc = sampling_logits(mixed, seen, params)
                if forced_tokens is not None:
                    tok = int(forced_tokens[step])
                else:
                    tok = int(sample(proc, params, generator)[0])
                yield StepInfo(step, tok, position, proc.softmax(-1)[0] if record_probs else None)
                if tok == cfg.stop_speech:
                    return
                seen[0, tok] = True
                fed = tok
                e = t3.embed_speech(torch.tensor([[tok]], device=dev), torch.tensor([step + 1], device=dev))
                out = t3.forward_hidden(e.expand(2, -1, -1), L + step, cache, probes=probes)
        finally:
            if stats is not None and g is not None:
                stats.update(g.counts)


def generate_speech_tokens(t3: T3, cond: torch.Tensor, text_ids: torch.Tensor,
                           params: SamplingParams = SamplingParams(), *,
                           on_step: Callable[[StepInfo], None] | None = None, **kw) -> GenerationResult:
    stats: dict = {}
    steps = []
    for info in iter_speech_tokens(t3, cond, text_ids, params, stats=stats, **kw):
        steps.append(info)
        if on_step is not None:
            on_step(info)
    eos = bool(steps) and steps[-1].token == t3.cfg.stop_speech
    tokens = [s.token for s in steps if s.token < t3.cfg.num_valid_speech]
    return GenerationResult(tokens, steps, eos, stats)
