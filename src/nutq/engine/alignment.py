"""The alignment guard: the official `AlignmentStreamAnalyzer`, rebuilt without eager attention.

T3 implicitly aligns speech to text in a few attention heads. Averaging their attention over the
text span gives, per generated frame, where in the text the model is. From that the guard
suppresses EOS until the text is nearly consumed and forces EOS on a bad ending (a long tail on the
last tokens, attention going back to earlier text after completion, or a repeated token). The
heads' weights are computed from q and the cached k by the backbone's probe (see
`LlamaBackbone.forward`).

All thresholds are configuration. `OFFICIAL` reproduces chatterbox-tts 0.1.7 exactly (proven on
recorded attention by tests/test_alignment_parity.py); `ARABIC` is the tuned profile. This host
guard is the reference for the batched on-device one in `alignment_device.py`.

Frames: frame 0 is the prefill, whose two BOS queries give two alignment rows; each later frame
is one decode step and gives one row. A row is the heads' mean attention over the text span.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import torch

__all__ = ["GuardConfig", "OFFICIAL", "ARABIC", "PROFILES", "COUNT_KEYS", "AlignmentGuard", "GuardDecision"]

EOS_BIG = 2.0**15  # the official edit value; representable in every >= 16-bit float dtype

# Fixed windows of the official heuristics (structure, not thresholds):
START_TOKENS = 4  # "started" needs strong attention on one of the first 4 text tokens
END_TOKENS = 2  # ... and no attention above `false_start` on the last 2 in the last 2 rows
TAIL_TOKENS = 3  # long tail: the last 3 tokens (the second-last is often punctuation, EOT is rarely attended)
REPEAT_SKIP_TAIL = 5  # alignment repetition looks at all but the last 5 tokens

# Decision counters, in this order wherever they are stored as a tensor (alignment_device.py).
COUNT_KEYS = ("eos_suppressed", "forced_eos", "forced_long_tail", "forced_alignment_repetition",
              "forced_token_repetition", "discontinuity", "false_start")


@dataclass(frozen=True)
class GuardConfig:
    heads: tuple[tuple[int, int], ...] = ((12, 15), (13, 11), (9, 2))  # (layer, head)
    # The text position moves to this frame's argmax only if -max_jump_back < jump < max_jump_forward;
    # otherwise the frame counts as a discontinuity and the position is kept.
    max_jump_back: int = 4
    max_jump_forward: int = 7
    complete_margin: int = 3  # complete once position >= S - margin; EOS allowed once argmax >= S - margin
    long_tail_frames: float = 5.0  # summed attention per last-3 token after completion (5 frames = 200 ms)
    alignment_repetition: float = 5.0  # summed per-frame max attention on earlier text after completion
    token_repetition: int = 2  # this many identical consecutive fed-back tokens force EOS
    min_text_for_eos_suppression: int = 6  # suppress EOS only for texts of at least this many tokens
    false_start: float = 0.1  # attention on the last 2 tokens above this means speech has not started
    start_attention: float = 0.5  # attention on the first 4 tokens needed before speech counts as started
    # The official guard only tracks a false start. Holding makes it act: until the alignment has
    # started, the position does not move (a hallucinated jump to the end would mark the text
    # complete and arm the long-tail check) and EOS is suppressed (nothing has been said yet).
    false_start_hold: bool = False
    # The hold ends after this many frames even if the alignment never started, so a voice whose
    # heads never focus still reaches the official behaviour and can stop.
    false_start_patience: int = 50

    def __post_init__(self):
        if not self.heads or any(len(h) != 2 or min(h) < 0 for h in self.heads):
            raise ValueError(f"heads must be non-empty (layer, head) pairs >= 0, got {self.heads}")
        if self.max_jump_back < 1 or self.max_jump_forward < 1:
            raise ValueError("max_jump_back and max_jump_forward must be >= 1, else the position never moves")
        if self.complete_margin < 0 or self.min_text_for_eos_suppression < 0 or self.false_start_patience < 0:
            raise ValueError("complete_margin, min_text_for_eos_suppression and false_start_patience must be >= 0")
        if self.long_tail_frames <= 0 or self.alignment_repetition < 0:
            # long_tail_frames <= 0 would force EOS on the very frame the text completes
            raise ValueError("long_tail_frames must be > 0 and alignment_repetition >= 0")
        if not 2 <= self.token_repetition <= 8:
            # 1 would force EOS on every token; the official keeps only the last 8 tokens
            raise ValueError(f"token_repetition must be in [2, 8], got {self.token_repetition}")
        if not (0 < self.false_start <= 1 and 0 <= self.start_attention <= 1):
            raise ValueError("false_start must be in (0, 1] and start_attention in [0, 1] (attention weights)")


OFFICIAL = GuardConfig()
# Tuned for Arabic: two identical tokens in a row are common in Arabic speech (long vowels,
# geminated consonants), so only three force EOS; and a false start holds the guard.
ARABIC = GuardConfig(token_repetition=3, long_tail_frames=5.0, max_jump_forward=7, false_start=0.1,
                     false_start_hold=True)
PROFILES = types.MappingProxyType({"official": OFFICIAL, "arabic": ARABIC})


@dataclass
class GuardDecision:
    text_position: int
    suppress_eos: bool
    force_eos: bool
    reason: str = ""  # comma-separated force reasons: long_tail, alignment_repetition, token_repetition
    discontinuity: bool = False  # the argmax jumped too far; the position was kept
    false_start: bool = False  # the alignment has not started yet


class AlignmentGuard:
    """Per-utterance state. `text_span` = (start, end) of the text tokens in the prefill sequence."""

    def __init__(self, text_span: tuple[int, int], cfg: GuardConfig = OFFICIAL):
        self.cfg = cfg
        self.i, self.j = text_span
        self.S = self.j - self.i
        if self.S < 1:
            raise ValueError(f"empty text span {text_span}")
        self.rows: list[torch.Tensor] = []  # one (S,) alignment row per query (2 at frame 0, then 1)
        self.frame = 0
        self.text_position = 0
        self.started = False
        self.complete = False
        self.completed_at: int | None = None  # number of rows when the text completed
        self.tokens: list[int] = []
        self.counts = dict.fromkeys(COUNT_KEYS, 0)

    def observe(self, attn: torch.Tensor, fed_token: int | None) -> GuardDecision:
        """attn: (n_heads, T, kv_len) probe weights of the latest forward (T = prefill length at
        frame 0, then 1); fed_token: the id that forward consumed (BOS at the first step)."""
        cfg = self.cfg
        a = attn.float().mean(dim=0).cpu()  # (T, kv_len)
        # frame 0: only the rows of the BOS queries after the text count
        chunk = (a[self.j:, self.i:self.j] if self.frame == 0 else a[:, self.i:self.j]).clone()
        chunk[:, self.frame + 1:] = 0  # official quirk: masks text columns beyond the frame count
        self.rows.extend(chunk)
        A = torch.stack(self.rows)  # (rows, S)
        T, S = A.shape

        not_started = A[-2:, -END_TOKENS:].max() > cfg.false_start or A[:, :START_TOKENS].max() < cfg.start_attention
        self.started = self.started or not not_started
        hold = cfg.false_start_hold and not self.started and self.frame < cfg.false_start_patience

        cur = int(chunk[-1].argmax())
        jump = cur - self.text_position
        discontinuity = False
        if not hold:
            if -cfg.max_jump_back < jump < cfg.max_jump_forward:
                self.text_position = cur
            else:
                discontinuity = True

        if not self.complete and self.text_position >= S - cfg.complete_margin:
            self.complete, self.completed_at = True, T
        long_tail = alignment_rep = False
        if self.complete:
            after = A[self.completed_at:]  # rows after the completing frame
            long_tail = bool(after[:, -TAIL_TOKENS:].sum(dim=0).max() >= cfg.long_tail_frames)
            # The official crashes here for S <= 5 (empty reduction); there is no earlier text then.
            if S > REPEAT_SKIP_TAIL:
                alignment_rep = bool(after[:, :-REPEAT_SKIP_TAIL].max(dim=1).values.sum() > cfg.alignment_repetition)

        if fed_token is not None:
            self.tokens = (self.tokens + [fed_token])[-8:]
        n = cfg.token_repetition
        # the official also requires 3 fed tokens (BOS + 2) whatever n is
        token_rep = len(self.tokens) >= max(3, n) and len(set(self.tokens[-n:])) == 1

        suppress = (cur < S - cfg.complete_margin and S >= cfg.min_text_for_eos_suppression) or hold
        force = long_tail or alignment_rep or token_rep
        reasons = (("long_tail", long_tail), ("alignment_repetition", alignment_rep), ("token_repetition", token_rep))
        c = self.counts
        c["eos_suppressed"] += int(suppress and not force)
        c["forced_eos"] += int(force)
        c["forced_long_tail"] += int(long_tail)
        c["forced_alignment_repetition"] += int(alignment_rep)
        c["forced_token_repetition"] += int(token_rep)
        c["discontinuity"] += int(discontinuity)
        c["false_start"] += int(not self.started)
        self.frame += 1
        return GuardDecision(self.text_position, suppress, force, ",".join(k for k, v in reasons if v),
                             discontinuity, not self.started)

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
