"""The alignment guard for a batch of sessions, with all state on the model's device.

The host `AlignmentGuard` (alignment.py) is the reference: it keeps the whole alignment matrix and
recomputes its statistics every frame, as the official analyzer does, and reads results back to
the host. The fast decode loop must not wait for the host each token, and batches sessions with
different text spans, so this guard keeps each statistic as a running value per session:

  strongest attention on the first 4 text tokens so far      head_max  (B,)
  the previous row's attention on the last 2 text tokens     prev_end  (B, 2)
  attention summed per last-3 text token since completion    tail_sum  (B, 3)
  row max over earlier text, summed since completion         rep_sum   (B,)
  length of the current run of identical fed tokens          run       (B,)

A step is then O(S_max) per session with no history, and `observe` / `apply` are tensor ops only:
no `.item()`, no host copies, no Python branches on tensor values (tests run them on the meta
device and under `torch.compile(fullgraph=True)`), so they can sit inside a captured decode step.

Decisions equal the host guard's for every profile. One caveat: the running sums add rows one at
a time where the host sums all rows at once, so a statistic within float rounding (~1e-6
relative) of its threshold could decide differently; thresholds are round numbers, attention
sums are not.

Usage, for B session slots and text spans padded to `max_text` columns:

    guard = DeviceGuard(batch=B, max_text=S_max, cfg=ARABIC, max_frames=1000, device=dev)
    pos, sup, force = guard.start([probe[:, j:, i:j] ...], bos=start_speech, slots=[...])  # frame 0
    logits0 = guard.apply(logits0, sup, force, eos)
    per step: rows = text_span_rows(probe, spans, S_max)[:, :, 0]      # (B, n_heads, S_max)
              pos, sup, force = guard.observe(rows, fed_tokens)
              logits = guard.apply(logits, sup, force, eos)
    guard.counts() / guard.positions() whenever the host wants them (one read, not per step)

Free slots are stepped along with the rest (their values are ignored); `start` resets a slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from .alignment import (COUNT_KEYS, END_TOKENS, EOS_BIG, OFFICIAL, REPEAT_SKIP_TAIL, START_TOKENS, TAIL_TOKENS,
                        GuardConfig)
from .sampling import to_device

__all__ = ["DeviceGuard", "text_span_rows"]


def text_span_rows(attn: torch.Tensor, spans: torch.Tensor, width: int) -> torch.Tensor:
    """Cut each session's text-span columns out of probe weights, left-aligned and zero-padded.

    attn (B, n_heads, Q, kv_len); spans (B, 2) long (start, end) on attn's device, with
    0 <= start <= end <= kv_len and end - start <= width (not checked: that would need a host
    read). Returns (B, n_heads, Q, width): column c is text token c, zero for c >= end - start.
    """
    B, H, Q, K = attn.shape
    idx = spans[:, :1] + torch.arange(width, device=attn.device)  # (B, width)
    valid = idx < spans[:, 1:]
    idx = idx.clamp(0, K - 1)  # padding columns read any in-range key, then are zeroed
    rows = attn.gather(3, idx[:, None, None, :].expand(B, H, Q, width))
    return rows.masked_fill(~valid[:, None, None, :], 0.0)


class _State(NamedTuple):
    """Per-session guard state, each tensor with the session on dim 0."""

    text_len: torch.Tensor  # long: S, the session's number of text tokens
    frame: torch.Tensor  # long: frames observed so far
    position: torch.Tensor  # long: text position
    started: torch.Tensor  # bool
    complete: torch.Tensor  # bool
    head_max: torch.Tensor  # float
    prev_end: torch.Tensor  # float (., END_TOKENS)
    tail_sum: torch.Tensor  # float (., TAIL_TOKENS)
    rep_sum: torch.Tensor  # float
    last_token: torch.Tensor  # long, -1 before the first
    run: torch.Tensor  # long
    n_fed: torch.Tensor  # long
    counts: torch.Tensor  # long (., len(COUNT_KEYS))


def _fresh(text_len: torch.Tensor) -> _State:
    """State before frame 0; every field its own tensor (observe updates them in place)."""
    b, dev = text_len.shape[0], text_len.device

    def zeros(*shape, dtype=torch.float32):
        return torch.zeros(b, *shape, dtype=dtype, device=dev)

    long, flag = torch.long, torch.bool
    return _State(text_len.clone(), zeros(dtype=long), zeros(dtype=long), zeros(dtype=flag), zeros(dtype=flag),
                  zeros(), zeros(END_TOKENS), zeros(TAIL_TOKENS), zeros(), zeros(dtype=long) - 1,
                  zeros(dtype=long), zeros(dtype=long), zeros(len(COUNT_KEYS), dtype=long))


def _last_columns(rows: torch.Tensor, text_len: torch.Tensor, n: int) -> torch.Tensor:
    """rows (b, R, W) -> (b, R, n): columns S-n .. S-1 of each session (repeated column 0 when
    S < n, which leaves their max and per-column sums' max as the host's shorter slice)."""
    idx = (text_len[:, None] - n + torch.arange(n, device=rows.device)).clamp(min=0)  # (b, n)
    return rows.gather(2, idx[:, None, :].expand(-1, rows.shape[1], -1))


def _advance(cfg: GuardConfig, st: _State, rows: torch.Tensor, fed: torch.Tensor):
    """One frame for b sessions: rows (b, R, W) head-mean attention over the text span (R = 2 at
    frame 0, else 1), fed (b,) the tokens this forward consumed. Mirrors AlignmentGuard.observe."""
    W = rows.shape[-1]
    col = torch.arange(W, device=rows.device)
    S = st.text_len[:, None]  # (b, 1)
    # official quirk: text columns beyond the frame index are zero; padding is not text
    rows = rows.masked_fill(~((col <= st.frame[:, None]) & (col < S))[:, None], 0.0)
    cur = rows[:, -1].masked_fill(col >= S, float("-inf")).argmax(-1)  # first max, as on the host

    recent_end = torch.cat([st.prev_end[:, None], _last_columns(rows, st.text_len, END_TOKENS)], 1)[:, -2:]
    head = rows[:, :, :START_TOKENS].masked_fill(col[:START_TOKENS] >= S[:, :, None], float("-inf")).amax((1, 2))
    head_max = torch.maximum(st.head_max, head)
    not_started = (recent_end.amax((1, 2)) > cfg.false_start) | (head_max < cfg.start_attention)
    started = st.started | ~not_started
    if cfg.false_start_hold:
        hold = ~started & (st.frame < cfg.false_start_patience)
    else:
        hold = torch.zeros_like(started)

    jump = cur - st.position
    in_range = (jump > -cfg.max_jump_back) & (jump < cfg.max_jump_forward)
    position = torch.where(in_range & ~hold, cur, st.position)
    discontinuity = ~in_range & ~hold

    complete = st.complete | (position >= st.text_len - cfg.complete_margin)
    # rows of the completing frame itself are not "after completion" (official completed_at = T)
    was = st.complete[:, None]
    tail_sum = st.tail_sum + torch.where(was, _last_columns(rows, st.text_len, TAIL_TOKENS).sum(1), 0.0)
    earlier = rows.masked_fill((col >= S - REPEAT_SKIP_TAIL)[:, None], float("-inf")).amax(-1).sum(1)  # (b,)
    has_earlier = st.text_len > REPEAT_SKIP_TAIL
    rep_sum = st.rep_sum + torch.where(st.complete & has_earlier, earlier, 0.0)
    long_tail = complete & (tail_sum.amax(1) >= cfg.long_tail_frames)
    alignment_rep = complete & has_earlier & (rep_sum > cfg.alignment_repetition)

    run = torch.where(fed == st.last_token, st.run + 1, 1)
    n_fed = st.n_fed + 1
    token_rep = (n_fed >= max(3, cfg.token_repetition)) & (run >= cfg.token_repetition)

    suppress = ((cur < st.text_len - cfg.complete_margin) & (st.text_len >= cfg.min_text_for_eos_suppression)) | hold
    force = long_tail | alignment_rep | token_rep
    events = torch.stack([suppress & ~force, force, long_tail, alignment_rep, token_rep, discontinuity, ~started], 1)
    new = _State(st.text_len, st.frame + 1, position, started, complete, head_max, recent_end[:, -1], tail_sum,
                 rep_sum, fed, run, n_fed, st.counts + events.long())
    return new, position, suppress, force


class DeviceGuard:
    """Alignment guard state for `batch` session slots with up to `max_text` text tokens each.

    `max_frames` > 0 also keeps each slot's text position per frame (for timestamps), read with
    `positions()`; frames past it are not recorded.
    """

    def __init__(self, batch: int, max_text: int, cfg: GuardConfig = OFFICIAL, *, max_frames: int = 0,
                 device: torch.device | str | None = None):
        if batch < 1 or max_text < 1 or max_frames < 0:
            raise ValueError(f"need batch >= 1, max_text >= 1, max_frames >= 0; got {batch}, {max_text}, {max_frames}")
        self.cfg, self.batch, self.max_text, self.max_frames = cfg, batch, max_text, max_frames
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self._st = _fresh(torch.ones(batch, dtype=torch.long, device=self.device))
        # one extra column takes the writes of frames past max_frames
        self._history = torch.full((batch, max_frames + 1), -1, dtype=torch.long, device=self.device)

    def start(self, prefill_rows: Sequence[torch.Tensor], bos: int, slots: Sequence[int] | None = None):
        """Reset `slots` (default: all, in order) and observe their frame 0.

        prefill_rows[k]: (n_heads, 2, S_k) attention of the two BOS queries over session k's text
        span (the official frame 0). Returns (text_position, suppress, force), each (len(slots),),
        for the prefill's logits."""
        slots = list(range(self.batch)) if slots is None else list(slots)
        if len(slots) != len(prefill_rows) or not slots:
            raise ValueError(f"{len(prefill_rows)} prefill rows for {len(slots)} slots")
        if len(set(slots)) != len(slots) or min(slots) < 0 or max(slots) >= self.batch:
            raise ValueError(f"slots must be distinct and in [0, {self.batch}), got {slots}")
        heads = prefill_rows[0].shape[0]
        rows = torch.zeros(len(slots), heads, 2, self.max_text, device=self.device)
        for k, r in enumerate(prefill_rows):
            if r.dim() != 3 or r.shape[:2] != (heads, 2) or not 1 <= r.shape[2] <= self.max_text:
                raise ValueError(f"prefill rows must be (n_heads, 2, S) with 1 <= S <= {self.max_text}, "
                                 f"got {tuple(r.shape)}")
            rows[k, :, :, :r.shape[2]] = r.to(self.device, torch.float32)
        lens = to_device(torch.tensor([r.shape[2] for r in prefill_rows]), self.device)
        idx = to_device(torch.tensor(slots), self.device)
        fed = torch.full((len(slots),), bos, dtype=torch.long, device=self.device)
        new, pos, suppress, force = _advance(self.cfg, _fresh(lens), rows.mean(1), fed)
        for buf, val in zip(self._st, new):
            buf[idx] = val
        self._history[idx] = -1
        self._history[idx, 0] = pos
        return pos, suppress, force

    def observe(self, attn: torch.Tensor, fed: torch.Tensor, slots: torch.Tensor | None = None):
        """One decode step for every slot, or for `slots` ((b,) long on the device, distinct) only:
        the others keep their state. attn (b, n_heads, max_text): this step's probe weights over
        each slot's text span, zero-padded (see `text_span_rows`); fed (b,) long: the token each
        slot's forward consumed. Returns (text_position, suppress, force), each (b,)."""
        b = self.batch if slots is None else slots.shape[0]
        if attn.dim() != 3 or attn.shape[0] != b or attn.shape[2] != self.max_text:
            raise ValueError(f"attn must be ({b}, n_heads, {self.max_text}), got {tuple(attn.shape)}")
        if fed.shape != (b,):
            raise ValueError(f"fed must be ({b},), got {tuple(fed.shape)}")
        st = self._st if slots is None else _State(*(buf.index_select(0, slots) for buf in self._st))
        new, pos, suppress, force = _advance(self.cfg, st, attn.float().mean(1)[:, None], fed)
        frame = st.frame.clamp(max=self.max_frames)[:, None]
        if slots is None:
            self._history.scatter_(1, frame, pos[:, None])
            for buf, val in zip(self._st, new):  # in place: buffers keep their addresses (graph capture)
                buf.copy_(val)
        else:
            self._history.index_put_((slots[:, None], frame), pos[:, None])
            for buf, val in zip(self._st, new):
                buf.index_copy_(0, slots, val)
        return pos, suppress, force

    @staticmethod
    def apply(logits: torch.Tensor, suppress: torch.Tensor, force: torch.Tensor, eos: int) -> torch.Tensor:
        """logits (B, V): as `AlignmentGuard.apply` per row (suppress: EOS = -2^15; force: only EOS)."""
        is_eos = torch.arange(logits.shape[-1], device=logits.device) == eos
        out = logits.masked_fill(suppress[:, None] & is_eos, -EOS_BIG)
        only_eos = torch.where(is_eos, EOS_BIG, -EOS_BIG).to(logits.dtype)
        return torch.where(force[:, None], only_eos, out)

    @property
    def text_position(self) -> torch.Tensor:
        return self._st.position

    def counts(self) -> dict[str, torch.Tensor]:
        """Decision counts per slot, {key: (B,) long} with the keys of AlignmentGuard.counts."""
        return dict(zip(COUNT_KEYS, self._st.counts.unbind(1)))

    def counts_of(self, slot: int) -> dict[str, int]:
        """One slot's decision counts on the host, in one device read."""
        return dict(zip(COUNT_KEYS, self._st.counts[slot].tolist()))

    def positions(self) -> torch.Tensor:
        """(B, max_frames) text position per frame since each slot's start; -1 for frames not seen."""
        return self._history[:, :self.max_frames]
