"""The alignment guard: the official `AlignmentStreamAnalyzer`, rebuilt without eager attention.

T3 implicitly aligns speech to text in a few attention heads. Averaging their row-0 attention over
the text span gives, per generated frame, where in the text the model is. From that the guard
suppresses EOS until the text is nearly consumed and forces EOS on a bad ending (a long tail on the
last tokens, attention jumping back after completion, or a repeated token). The heads' weights are
computed from q and the cached k by the backbone's probe (see `LlamaBackbone.forward`).

All thresholds are configuration. `OFFICIAL` reproduces chatterbox-tts 0.1.7 exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["GuardConfig", "OFFICIAL", "AlignmentGuard", "GuardDecision"]

EOS_BIG = 2.0**15


@dataclass(frozen=True)
class GuardConfig:
    heads: tuple[tuple[int, int], ...] = ((12, 15), (13, 11), (9, 2))  # (layer, head)
    # text position moves only if -back < jump < forward (else: discontinuity, position kept)
    max_jump_back: int = 4
    max_jump_forward: int = 7
    complete_margin: int = 3  # complete once position >= S - margin
    long_tail_frames: float = 5.0  # summed attention on the last 3 tokens after completion
    alignment_repetition: float = 5.0  # summed max attention on earlier text after completion
    token_repetition: int = 2  # this many identical consecutive fed-back tokens force EOS
    min_text_for_eos_suppression: int = 6  # suppress EOS only for texts of at least this many tokens
    false_start: float = 0.1  # tracked only (the official guard does not act on it)


OFFICIAL = GuardConfig()


@dataclass
class GuardDecision:
    text_position: int
    suppress_eos: bool
    force_eos: bool
    reason: str = ""


class AlignmentGuard:
    """Per-utterance state. `text_span` = (start, end) of the text tokens in the prefill sequence."""

    def __init__(self, text_span: tuple[int, int], cfg: GuardConfig = OFFICIAL):
        self.cfg = cfg
        self.i, self.j = text_span
        self.S = self.j - self.i
        self.rows: list[torch.Tensor] = []  # one (S,) alignment row per frame
        self.frame = 0
        self.text_position = 0
        self.started = False
        self.complete = False
        self.completed_at: int | None = None
        self.tokens: list[int] = []
        self.counts = {"eos_suppressed": 0, "forced_eos": 0, "discontinuity": 0}

    def observe(self, attn: torch.Tensor, fed_token: int | None) -> GuardDecision:
        """attn: (n_heads, T, kv_len) probe weights of the latest forward; fed_token: the id that
        forward consumed (BOS at the first step)."""
        a = attn.float().mean(dim=0).cpu()  # (T, kv_len)
        chunk = (a[self.j:, self.i:self.j] if self.frame == 0 else a[:, self.i:self.j]).clone()
        chunk[:, self.frame + 1:] = 0  # official quirk: masks text columns beyond the frame count
        self.rows.extend(chunk)
        A = torch.stack(self.rows)  # (T, S)
        T, S = A.shape
        cur = int(chunk[-1].argmax())
        jump = cur - self.text_position
        if -self.cfg.max_jump_back < jump < self.cfg.max_jump_forward:
            self.text_position = cur
        else:
            self.counts["discontinuity"] += 1
        self.started = self.started or not (A[-2:, -2:].max() > self.cfg.false_start or A[:, :4].max() < 0.5)
        if not self.complete and self.text_position >= S - self.cfg.complete_margin:
            self.complete, self.completed_at = True, T
        long_tail = alignment_rep = False
        if self.complete:
            after = A[self.completed_at:]
            long_tail = bool(after[:, -3:].sum(dim=0).max() >= self.cfg.long_tail_frames)
            alignment_rep = bool(after[:, :-5].max(dim=1).values.sum() > self.cfg.alignment_repetition) if S > 5 else False
        if fed_token is not None:
            self.tokens = (self.tokens + [fed_token])[-8:]
        n = self.cfg.token_repetition
        token_rep = len(self.tokens) >= 3 and len(self.tokens) >= n and len(set(self.tokens[-n:])) == 1
        suppress = cur < S - self.cfg.complete_margin and S >= self.cfg.min_text_for_eos_suppression
        force = long_tail or alignment_rep or token_rep
        reason = ",".join(k for k, v in (("long_tail", long_tail), ("alignment_repetition", alignment_rep),
                                         ("token_repetition", token_rep)) if v)
        self.counts["eos_suppressed"] += int(suppress and not force)
        self.counts["forced_eos"] += int(force)
        self.frame += 1
        return GuardDecision(self.text_position, suppress, force, reason)

    @staticmethod
    def apply(logits: torch.Tensor, d: GuardDecision, eos: int) -> torch.Tensor:
        """Official semantics: suppress sets logits[eos] = -2^15; force makes EOS the only choice."""
        if d.suppress_eos:
            logits = logits.clone()
            logits[..., eos] = -EOS_BIG
        if d.force_eos:
            logits = torch.full_like(logits, -EOS_BIG)
            logits[..., eos] = EOS_BIG
        return logits
