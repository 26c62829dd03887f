"""Guard profiles: the Arabic profile's own behaviour, and configuration checks.

The official profile is proven against the official analyzer in test_alignment_parity.py; here
are the places where `ARABIC` deliberately differs: three identical tokens (not two) force EOS,
and a false start holds the guard (position kept, EOS suppressed) until the alignment starts or
`false_start_patience` frames pass.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from nutq.engine.alignment import ARABIC, OFFICIAL, PROFILES, AlignmentGuard, GuardConfig

BOS = 6561


def run(cfg: GuardConfig, text_rows: list[torch.Tensor], tokens: list[int] | None = None):
    """Feed per-frame text rows (frame 0: (2, S), then (S,)) for a text at span (0, S)."""
    S = text_rows[0].shape[-1]
    guard = AlignmentGuard((0, S), cfg)
    tokens = tokens or [BOS] + list(range(100, 100 + len(text_rows) - 1))
    prefill = torch.zeros(1, S + 2, S + 2)
    prefill[0, S:, :S] = text_rows[0]
    out = [guard.observe(prefill, tokens[0])]
    for k in range(1, len(text_rows)):
        row = torch.zeros(1, 1, S + 2 + k)
        row[0, 0, :S] = text_rows[k]
        out.append(guard.observe(row, tokens[k]))
    return guard, out


def peaks(S: int, at: list[int], value: float) -> list[torch.Tensor]:
    rows = []
    for k, p in enumerate(at):
        r = torch.full((S,), 0.02)
        r[p] = value
        rows.append(torch.stack([r, r]) if k == 0 else r)
    return rows


def test_profiles_by_name():
    assert PROFILES["official"] is OFFICIAL and PROFILES["arabic"] is ARABIC
    assert OFFICIAL == GuardConfig() and not OFFICIAL.false_start_hold and OFFICIAL.token_repetition == 2
    a = ARABIC
    got = (a.token_repetition, a.long_tail_frames, a.max_jump_forward, a.false_start, a.false_start_hold)
    assert got == (3, 5.0, 7, 0.1, True)
    with pytest.raises(TypeError):
        PROFILES["mine"] = OFFICIAL  # read-only


@pytest.mark.parametrize("bad", [dict(token_repetition=1), dict(token_repetition=9), dict(max_jump_back=0),
                                 dict(max_jump_forward=0), dict(false_start=0.0), dict(start_attention=1.5),
                                 dict(long_tail_frames=0.0), dict(heads=()), dict(false_start_patience=-1)])
def test_invalid_config_is_refused(bad):
    with pytest.raises(ValueError):
        dataclasses.replace(OFFICIAL, **bad)


def test_two_identical_tokens_force_eos_only_in_the_official_profile():
    rows = peaks(12, [0, 0, 1, 1, 2, 2, 3], 0.8)
    tokens = [BOS, 5, 7, 7, 9, 9, 9]
    _, off = run(OFFICIAL, rows, tokens)
    _, ar = run(ARABIC, rows, tokens)
    assert [d.force_eos for d in off] == [False, False, False, True, False, True, True]
    assert [d.force_eos for d in ar] == [False, False, False, False, False, False, True]
    assert ar[-1].reason == "token_repetition"


def test_false_start_holds_position_and_eos_until_the_alignment_starts():
    # S = 5 (too short for the official EOS suppression). Weak attention (max 0.3 < 0.5 on the
    # first tokens) wanders forward for 4 frames, then a clear peak at the start begins speech.
    # Frame 3's 0.3 sits on the last 2 tokens, which keeps frame 4 a false start as well.
    S = 5
    rows = peaks(S, [0, 1, 2, 3], 0.3) + peaks(S, [0, 0, 1, 2], 0.8)[1:]
    _, off = run(OFFICIAL, rows)
    guard, ar = run(ARABIC, rows)
    assert [d.text_position for d in off][:4] == [0, 1, 2, 3]  # the official follows the noise
    assert [d.text_position for d in ar] == [0, 0, 0, 0, 0, 1, 2]
    assert [d.suppress_eos for d in ar] == [True] * 5 + [False] * 2
    assert not any(d.suppress_eos for d in off)
    assert [d.false_start for d in ar] == [True] * 5 + [False] * 2
    assert guard.counts["false_start"] == 5 and guard.counts["discontinuity"] == 0
    # the official reached position 3 >= S - 3 on noise: complete, so its long-tail check is armed
    assert any(d.text_position >= S - 3 for d in off[:4])


def test_hold_is_released_after_patience():
    cfg = dataclasses.replace(ARABIC, false_start_patience=3)
    rows = peaks(12, [0, 1, 2, 3, 4, 5], 0.3)  # never starts
    guard, out = run(cfg, rows)
    assert [d.text_position for d in out] == [0, 0, 0, 3, 4, 5]
    assert all(d.false_start for d in out) and guard.counts["false_start"] == 6
    assert [d.suppress_eos for d in out] == [True] * 6  # after release: the official rule (text not consumed)
