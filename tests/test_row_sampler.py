"""One sampling call for many sessions draws what each session draws alone.

The reference is the per-session path the engine had before: the scalar sampling chain
(`sampling_logits`, `sample`) with the session's own generator, and a `DeviceGuard` of batch one
over its own text span. Rows have different parameters (greedy, temperature, min_p, top_p, top_k,
penalty, ignore_eos), guard profiles (official, arabic, none) and seeds; sessions join and leave
on different steps, and some sit steps out. Tokens, guard positions and counts must be equal.
"""

from __future__ import annotations

import random

import pytest
import torch

from nutq.engine.alignment import ARABIC, OFFICIAL
from nutq.engine.alignment_device import DeviceGuard
from nutq.engine.row_sampler import RowSampler
from nutq.engine.sampling import (RowParams, SamplingParams, cfg_mix, draw, processed_logits, sample,
                                  sample_rows, sampling_logits)
from nutq.models.t3 import T3, T3_TINY

V = T3_TINY.speech_vocab
BOS, EOS = T3_TINY.start_speech, T3_TINY.stop_speech
HEADS = len(OFFICIAL.heads)
MIXED = [SamplingParams(), SamplingParams(greedy=True), SamplingParams(temperature=1.3, min_p=0.0),
         SamplingParams(temperature=0.6, top_p=0.9, min_p=0.1), SamplingParams(top_k=40, repetition_penalty=1.0),
         SamplingParams(top_k=5, top_p=0.5, cfg_weight=0.0), SamplingParams(ignore_eos=True, temperature=1.0),
         SamplingParams(repetition_penalty=1.3, top_p=0.97, top_k=300)]


def _logits(gen: torch.Generator, n: int) -> torch.Tensor:
    return torch.randn(n, V, generator=gen) * 4


def test_draw_is_multinomial_with_each_rows_generator():
    probs = _logits(torch.Generator().manual_seed(0), 6).softmax(-1)
    probs[2, 100:] = 0.0  # zeros are never drawn
    got = draw(probs, [torch.Generator().manual_seed(s) for s in range(6)])
    want = [int(torch.multinomial(probs[i:i + 1], 1, generator=torch.Generator().manual_seed(i))) for i in range(6)]
    assert got.tolist() == want
    assert got[2] < 100


def test_processed_logits_per_row_equal_the_scalar_chain_bit_for_bit():
    gen = torch.Generator().manual_seed(1)
    mixed = _logits(gen, len(MIXED))
    seen = torch.rand(len(MIXED), V, generator=gen) < 0.05
    got = processed_logits(mixed, seen, RowParams.of(MIXED, V))
    for i, p in enumerate(MIXED):
        assert torch.equal(got[i:i + 1], sampling_logits(mixed[i:i + 1], seen[i:i + 1], p)), p


def test_sample_rows_mixes_greedy_and_seeded_rows():
    gen = torch.Generator().manual_seed(2)
    proc = _logits(gen, len(MIXED))
    rp = RowParams.of(MIXED, V)
    got = sample_rows(proc, rp, [torch.Generator().manual_seed(10 + i) for i in range(len(MIXED))])
    want = [int(sample(proc[i:i + 1], p, torch.Generator().manual_seed(10 + i))) for i, p in enumerate(MIXED)]
    assert got.tolist() == want


class _Alone:
    """The per-session reference: its own scalar sampler, generator and batch-1 DeviceGuard."""

    def __init__(self, params, seed, cfg, span, prefill_attn):
        self.p, self.gen, self.cfg, self.span = params, torch.Generator().manual_seed(seed), cfg, span
        self.seen = torch.zeros(1, V, dtype=torch.bool)
        self.seen[0, BOS] = True
        self.fed = torch.tensor([BOS])
        self.position = torch.zeros(1, dtype=torch.long)
        if cfg is not None:
            i, j = span
            self.guard = DeviceGuard(1, j - i, cfg)
            self.position, self.sup, self.force = self.guard.start([prefill_attn[:, -2:, i:j]], bos=BOS)

    def sample(self, logits, attn):
        i, j = self.span
        if self.cfg is not None and attn is not None:
            self.position, self.sup, self.force = self.guard.observe(attn[None, :, 0, i:j], self.fed)
        mixed = cfg_mix(logits[0:1], logits[1:2], self.p.cfg_weight)
        if self.cfg is not None:
            mixed = DeviceGuard.apply(mixed, self.sup, self.force, EOS)
        if self.p.ignore_eos:
            mixed = mixed.index_fill(-1, torch.tensor([EOS]), float("-inf"))
        tok = sample(sampling_logits(mixed, self.seen, self.p), self.p, self.gen)
        self.seen.scatter_(1, tok.reshape(1, 1), True)
        self.fed = tok
        return int(tok), int(self.position[0])


def _attn(gen: torch.Generator, kv_len: int, span: tuple[int, int], step: int) -> torch.Tensor:
    """(HEADS, 1, kv_len) probe weights peaking near a text position that moves with the step."""
    w = torch.rand(HEADS, 1, kv_len, generator=gen)
    i, j = span
    w[:, :, i + min(step // 3, j - i - 1)] += 30.0 * torch.rand(HEADS, 1, generator=gen)
    return w.softmax(-1)


@pytest.mark.parametrize("seed", [0, 1])
def test_row_sampler_equals_each_session_alone(seed):
    rnd, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    t3 = T3(T3_TINY).eval()
    rows, max_text, lc = 6, 40, T3_TINY.len_cond
    sampler = RowSampler(t3, rows, max_text=max_text)
    free, live, done = list(range(rows)), {}, 0  # live: row -> (reference, kv_len, step)
    forced = suppressed = 0
    for step in range(60):
        for row in [r for r in list(live) if rnd.random() < 0.08]:  # sessions leave
            ref = live[row][0]
            if ref.cfg is not None:  # the counters, read once as a session ends
                counts = sampler.counts(row)
                assert counts == {k: int(v[0]) for k, v in ref.guard.counts().items()}
                forced += counts["forced_eos"]
                suppressed += counts["eos_suppressed"]
            del live[row]
            free.append(row)
            done += 1
        joining = []
        while free and rnd.random() < 0.5:  # sessions join, prefill first
            row = free.pop(rnd.randrange(len(free)))
            span = (lc, lc + rnd.randint(3, max_text))
            L = span[1] + 2
            prefill = torch.rand(HEADS, L, L, generator=gen).softmax(-1)
            p, cfg = rnd.choice(MIXED), rnd.choice([OFFICIAL, ARABIC, None])
            sampler.start(row, p, torch.Generator().manual_seed(100 * seed + step + row), cfg, span, prefill)
            live[row] = [_Alone(p, 100 * seed + step + row, cfg, span, prefill), L, 0]
            joining.append(row)
        stepping = [r for r in live if r not in joining and rnd.random() < 0.85]  # some sit this step out
        for group, with_attn in ((joining, False), (stepping, True)):
            if not group:
                continue
            rnd.shuffle(group)
            logits = torch.randn(len(group), 2, V, generator=gen) * 4
            # Likely EOS (suppression matters) and a dominant token (repeats: the guard forces EOS).
            logits[torch.rand(len(group), generator=gen) < 0.3, :, EOS] += 14.0
            logits[torch.rand(len(group), generator=gen) < 0.3, :, 7] += 40.0
            attn = None
            if with_attn:
                S = max(live[r][1] + live[r][2] for r in group)
                attn = torch.zeros(len(group), HEADS, 1, S)
                for k, r in enumerate(group):
                    ref, L, n = live[r]
                    attn[k, :, :, :L + n] = _attn(gen, L + n, ref.span, n)
            tok, pos = sampler.sample(group, logits, attn)
            for k, r in enumerate(group):
                ref = live[r][0]
                assert (int(tok[k]), int(pos[k])) == ref.sample(logits[k], None if attn is None else attn[k]), \
                    (step, r, ref.p, ref.cfg)
                live[r][2] += 1
    for row, (ref, _, _) in live.items():
        if ref.cfg is not None:
            assert sampler.counts(row) == {k: int(v[0]) for k, v in ref.guard.counts().items()}
    assert done > 3 and forced > 0 and suppressed > 0


def test_guard_rows_step_independently():
    """A guard row that is not stepped keeps its state; stepping a subset equals stepping it alone."""
    gen = torch.Generator().manual_seed(5)
    whole, part = DeviceGuard(3, 8, OFFICIAL), DeviceGuard(3, 8, OFFICIAL)
    pre = [torch.rand(HEADS, 2, 8, generator=gen).softmax(-1) for _ in range(3)]
    whole.start(pre, bos=BOS)
    part.start(pre, bos=BOS)
    for _ in range(4):
        attn = torch.rand(3, HEADS, 8, generator=gen).softmax(-1)
        fed = torch.randint(0, 5, (3,), generator=gen)
        want = whole.observe(attn, fed)
        got = part.observe(attn[[2, 0]], fed[[2, 0]], slots=torch.tensor([2, 0]))
        assert all(torch.equal(g, w[[2, 0]]) for g, w in zip(got, want))
        part.observe(attn[1:2], fed[1:2], slots=torch.tensor([1]))
    assert all(torch.equal(a, b) for a, b in zip(whole.counts().values(), part.counts().values()))
    assert whole.counts_of(1) == {k: int(v[1]) for k, v in part.counts().items()}
