"""Sessions admitted together are prefilled in one forward, and pipelined reads (a step's ids read
after the next forward is launched): tokens, guard and audio equal each session run alone.

Exactness follows tests/test_scheduler.py: the batched prefill's logits differ from a solo
prefill by float rounding (tests/test_prefill_many.py), which must not change a single draw, so
tokens are compared exactly and audio bit for bit (same tokens, same noise).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import nutq.engine.scheduler as scheduler_mod
from nutq.engine.alignment import OFFICIAL
from nutq.engine.kv_pool import KVPool
from nutq.engine.sampling import SamplingParams
from nutq.engine.scheduler import LoopStep, Scheduler
from nutq.engine.session import Session
from nutq.engine.speculative import SpecConfig

from tests.test_scheduler import (P, assert_same, make_session, outcome, scheduler, solo, solos, tts,  # noqa: F401
                                  voice)
from tests.speculative.conftest import random_draft
from tests.speculative.test_spec_scheduler import CACHE_LEN, GREEDY, make
from tests.speculative.test_spec_scheduler import outcome as spec_outcome
from tests.speculative.test_spec_scheduler import solo as spec_solo

__all__ = ["solos", "tts", "voice"]


@pytest.fixture
def groups(monkeypatch):
    """Records the prompt lengths of every batched prefill."""
    seen = []
    real = scheduler_mod.prefill_many

    def spy(t3, prompts, caches, probes=()):
        seen.append([p.shape[1] for p in prompts])
        return real(t3, prompts, caches, probes)

    monkeypatch.setattr(scheduler_mod, "prefill_many", spy)
    return seen


def submit_together(sched, sessions):
    """Queue `sessions` while the engine thread waits for the lock: one step boundary admits all."""
    with sched._cv:
        return [sched.run(s) for s in sessions]


@pytest.mark.parametrize("step", ["loop", "batched"])
def test_sessions_admitted_together_equal_each_alone(tts, voice, solos, groups, step):
    sched, rec, pool = scheduler(tts, 4, step=step, batch_prefill=True)
    with sched:
        ss = [make_session(tts, voice, pool, i) for i in range(3)]
        its = submit_together(sched, ss)
        for i, (s, it) in enumerate(zip(ss, its)):
            assert_same(outcome(s, list(it)), solos[i], f"admitted together, session {i}")
    assert len(groups) == 1 and len(set(groups[0])) == 3, "three prompts of different lengths, one forward"
    assert pool.in_use == 0


def test_a_bad_prompt_fails_only_its_own_session(tts, voice, solos, groups):
    sched, _, pool = scheduler(tts, 4, batch_prefill=True)
    with sched:
        ss = [make_session(tts, voice, pool, i) for i in range(2)]
        too_long = Session(tts.t3, tts.s3gen, pool, tts.text_ids("مرحبا " * 30), voice, P)
        bad_voice = make_session(tts, voice, pool, 2)
        bad_voice.voice = replace(voice, speaker_emb=voice.speaker_emb[..., :7])  # fails in the conditioning
        its = submit_together(sched, [ss[0], too_long, bad_voice, ss[1]])
        with pytest.raises(ValueError, match="does not fit a KV cache"):
            list(its[1])
        with pytest.raises(RuntimeError):
            list(its[2])
        for i, it in ((0, its[0]), (1, its[3])):
            assert_same(outcome(ss[i], list(it)), solos[i], f"session {i} next to bad prompts")
    assert len(groups) == 1 and len(groups[0]) == 2
    assert pool.in_use == 0


def test_a_failing_shared_prefill_is_retried_per_session(tts, voice, solos, monkeypatch):
    def broken(*args, **kw):
        raise RuntimeError("batched prefill exploded")

    monkeypatch.setattr(scheduler_mod, "prefill_many", broken)
    sched, _, pool = scheduler(tts, 4, batch_prefill=True)
    with sched:
        ss = [make_session(tts, voice, pool, i) for i in range(3)]
        for i, (s, it) in enumerate(zip(ss, submit_together(sched, ss))):
            assert_same(outcome(s, list(it)), solos[i], f"session {i} prefilled alone after the batch failed")
    assert pool.in_use == 0


class EosAt:
    """Wraps a step: the `at`-th forward that includes slot `slot` makes EOS certain for it (a
    random tiny model almost never draws EOS by itself)."""

    def __init__(self, step, slot: int, at: int, eos: int):
        self.step, self.slot, self.at, self.eos, self.seen = step, slot, at, eos, 0

    def __call__(self, slots, *args):
        logits, attn = self.step(slots, *args)
        if self.slot in slots:
            self.seen += 1
            if self.seen == self.at:
                logits = logits.clone()
                logits[list(slots).index(self.slot), :, self.eos] = 1e4
        return logits, attn


def run_mixed(tts, voice, step: str, pipeline: bool) -> tuple[list[dict], int]:
    """Four sessions: two admitted together (one ends at its limit of 5 tokens), one joining at
    step 2 (unguarded) whose 6th step ends it on EOS, one joining at step 5 with the same
    token generator."""
    short = SamplingParams(max_new_tokens=5, ignore_eos=True)
    sched, rec, pool = scheduler(tts, 4, step=step, pipeline=pipeline, batch_prefill=True)
    assert sched.pipeline is pipeline
    rec.step = EosAt(rec.step, slot=2, at=6, eos=tts.t3.cfg.stop_speech)  # session 1 gets slot 2
    with sched:
        ss = [make_session(tts, voice, pool, i) for i in range(3)] + [make_session(tts, voice, pool, 0, short, 7)]
        ss[1].guard = None  # the guard would suppress an EOS this early (a false start)
        # Session 2 draws from session 1's generator (as a stream's phrases do): one draw made for
        # session 1 after its EOS would shift all of session 2's.
        ss[2].generator = ss[1].generator
        its, joins = {}, {2: 1, 5: 2}

        def join():
            i = joins.pop(len(rec.batches), None)
            if i is not None:
                its[i] = sched.run(ss[i])

        rec.hook = join
        its[0], its[3] = submit_together(sched, [ss[0], ss[3]])
        outs = [outcome(s, list(its[i])) for i, s in enumerate(ss)]
        st = sched.stats()
    assert not joins and pool.in_use == 0
    assert ss[1].stopped_on_eos and ss[1].slot.cache is None  # ended, its slot released
    assert st.tokens == sum(s.timings.tokens + s.stopped_on_eos for s in ss), "each draw counted once"
    return outs, len(ss[1].tokens)


@pytest.mark.parametrize("step", ["loop", "batched"])
def test_pipelined_reads_equal_synchronous_ones(tts, voice, solos, step):
    """Reading a step's ids after launching the next: a session that ends on EOS or at its limit
    emits nothing more (its extra forward is dropped and nothing is drawn for it), the others are
    unchanged; staggered joins included."""
    got, n_eos = run_mixed(tts, voice, step, pipeline=True)
    want, _ = run_mixed(tts, voice, step, pipeline=False)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_same(g, w, f"pipelined vs synchronous, session {i}")
    assert_same(got[0], solos[0], "pipelined vs solo, session 0")
    assert n_eos == 6, "EOS drawn after its 6th step: its first token, then 5 steps' tokens, then EOS"
    assert got[3]["tokens"] == solo(tts, voice, 0, SamplingParams(max_new_tokens=5, ignore_eos=True), 7)["tokens"]


def test_settle_gives_a_synchronous_state(tts, voice):
    """After `_settle()` every draw so far is applied on the host (what a caller needing host
    values, e.g. a draft-and-verify round, relies on)."""
    sched, rec, pool = scheduler(tts, 2, pipeline=True)
    seen = []

    def check():
        if len(rec.batches) == 3:
            s = ss[0]
            before = s.timings.tokens
            sched._settle()
            seen.append((before, s.timings.tokens, len(sched._pending)))

    rec.hook = check
    with sched:
        ss = [make_session(tts, voice, pool, 0, SamplingParams(max_new_tokens=8, ignore_eos=True))]
        list(sched.run(ss[0]))
    (before, after, pending), = seen
    # inside step 3 (a forward launched, its predecessor's draw unread) settling applies that draw
    assert (before, after, pending) == (2, 3, 0)
    assert torch.is_tensor(ss[0].fed)


def test_pipelined_reads_switch_to_speculative_rounds(tts, voice):
    """Speculative rounds read host values each round: the scheduler settles its pending draws
    before them. Two sessions in plain (pipelined) steps, then the longer one alone in rounds;
    both equal their solo runs (greedy, a weak draft: rejections included)."""
    pool = KVPool(tts.t3.cfg.llama, 2, CACHE_LEN)
    spec = SpecConfig(k=3, draft=random_draft(tts.t3, 2, 6), adaptive=False, max_batch=1)
    sched = Scheduler(tts.t3, tts.s3gen, pool, LoopStep(tts.t3, pool, OFFICIAL.heads), speculative=spec, pipeline=True)
    params = [SamplingParams(max_new_tokens=6, greedy=True, ignore_eos=True), replace(GREEDY, ignore_eos=True)]
    with sched:
        ss = [make(tts, voice, pool, i, params[i]) for i in range(2)]
        got = [spec_outcome(s, list(it)) for s, it in zip(ss, submit_together(sched, ss))]
        st = sched.stats()
    for i in range(2):
        assert_same(got[i], spec_solo(tts, voice, i, params[i]), f"session {i}")
    assert st.steps > 0 and st.spec_rounds > 0  # both kinds of step ran
