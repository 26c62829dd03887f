"""Speculative decoding inside the scheduler: rounds for small batches, plain batched steps for
large ones, one sampling/guard state per session either way. Outcomes (tokens, guard counts,
chunks, audio) equal the solo reference loop's wherever the argument says they must: greedy
decoding with any draft, and sampling with draft = target (every draft accepted, draws line up);
with a weak draft, sampled tokens have the plain chain's joint distribution (chi-square)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch

from nutq.engine.alignment import OFFICIAL
from nutq.engine.chunking import ChunkSchedule
from nutq.engine.draft import DraftConfig, DraftT3
from nutq.engine.generate import iter_speech_tokens
from nutq.engine.kv_pool import KVPool
from nutq.engine.row_sampler import RowSampler
from nutq.engine.sampling import SamplingParams
from nutq.engine.scheduler import LoopStep, Scheduler
from nutq.engine.session import Session
from nutq.engine.spec_decode import SpecSession
from nutq.engine.speculative import SpecConfig
from nutq.tts import TTS

from .conftest import random_draft
from .test_spec_sampling import P_FLOOR, chi2_pvalue

TEXTS = ("مرحبا بكم في نطق", "هذا نص آخر أطول قليلا من الأول", "كيف حالك؟")
CACHE_LEN = 128
SCHEDULE = ChunkSchedule(first=3, max_size=6)
GREEDY = SamplingParams(max_new_tokens=24, greedy=True)
SAMPLED = SamplingParams(max_new_tokens=24)


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint)


@pytest.fixture(scope="module")
def voice(tts):
    g, n = tts.default_voice.gen, 25  # a 1 s vocoder prompt keeps every render fast
    short = replace(g, prompt_token=g.prompt_token[:, :n], prompt_token_len=torch.tensor([n]),
                    prompt_feat=g.prompt_feat[:, :2 * n], prompt_feat_len=None)
    return replace(tts.default_voice, gen=short)


def make(tts, voice, pool, i: int, params, guard=OFFICIAL, seed: int | None = None) -> Session:
    seed = i if seed is None else seed
    return Session(tts.t3, tts.s3gen, pool, tts.text_ids(TEXTS[i % len(TEXTS)]), voice, params, guard, SCHEDULE,
                   torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1000))


def outcome(s: Session, chunks) -> dict:
    return {"tokens": list(s.tokens), "eos": s.stopped_on_eos, "guard": s.guard_counts,
            "where": [(c.text_position, c.is_last) for c in chunks], "audio": [c.audio for c in chunks]}


def solo(tts, voice, i, params, guard=OFFICIAL, seed=None) -> dict:
    s = make(tts, voice, KVPool(tts.t3.cfg.llama, 1, CACHE_LEN), i, params, guard, seed)
    return outcome(s, list(s.run()))


def assert_same(got: dict, want: dict, who: str) -> None:
    assert got["tokens"] == want["tokens"], f"{who}: tokens differ from the solo loop"
    assert (got["eos"], got["guard"], got["where"]) == (want["eos"], want["guard"], want["where"]), who
    assert len(got["audio"]) == len(want["audio"]) and all(
        np.array_equal(a, b) for a, b in zip(got["audio"], want["audio"])), f"{who}: audio differs"


def spec_scheduler(tts, spec: SpecConfig, slots: int = 2):
    pool = KVPool(tts.t3.cfg.llama, slots, CACHE_LEN)
    steps = []

    def step(slots_, *args):
        steps.append(len(slots_))
        return LoopStep(tts.t3, pool, OFFICIAL.heads)(slots_, *args)

    return Scheduler(tts.t3, tts.s3gen, pool, step, speculative=spec), pool, steps


@pytest.mark.parametrize("draft", ["target", "random"])
@pytest.mark.parametrize("guard", [OFFICIAL, None], ids=["guard", "no-guard"])
def test_greedy_rounds_equal_the_solo_loop(tts, voice, draft, guard):
    d = "target" if draft == "target" else random_draft(tts.t3, 2, 5)
    sched, pool, steps = spec_scheduler(tts, SpecConfig(k=3, draft=d, adaptive=False))
    with sched:
        for i in range(3):
            s = make(tts, voice, pool, i, GREEDY, guard)
            assert_same(outcome(s, list(sched.run(s))), solo(tts, voice, i, GREEDY, guard), f"{draft}, text {i}")
        st = sched.stats()
    assert steps == []  # alone, every session decoded in rounds only
    assert st.spec_rounds > 0 and st.spec_drafted > 0
    if draft == "target":
        assert st.spec_acceptance_rate == 1.0
    else:
        assert st.spec_accepted < st.spec_drafted  # rejections happened and were repaired
    assert st.spec_emitted + 3 == st.tokens  # the first token of each session comes from its prefill


def test_sampled_rounds_with_draft_equal_target_equal_the_solo_loop(tts, voice):
    sched, pool, _ = spec_scheduler(tts, SpecConfig(k=4, draft="target"))
    with sched:
        for i, seed in ((0, 0), (1, 7)):
            s = make(tts, voice, pool, i, SAMPLED, seed=seed)
            assert_same(outcome(s, list(sched.run(s))), solo(tts, voice, i, SAMPLED, seed=seed), f"seed {seed}")
        st = sched.stats()
    assert st.spec_drafted > 0 and st.spec_acceptance_rate == 1.0


def test_sessions_switch_between_batched_steps_and_rounds(tts, voice):
    """max_batch 1: two sessions step together in plain steps; once one has ended the other goes
    on in rounds. Both still equal their solo runs (greedy, a weak draft: rejections included)."""
    spec = SpecConfig(k=3, draft=random_draft(tts.t3, 2, 6), adaptive=False, max_batch=1)
    sched, pool, steps = spec_scheduler(tts, spec)
    params = [SamplingParams(max_new_tokens=6, greedy=True, ignore_eos=True), replace(GREEDY, ignore_eos=True)]
    with sched:
        ss = [make(tts, voice, pool, i, params[i]) for i in range(2)]
        its = [sched.run(s) for s in ss]
        got = [outcome(s, list(it)) for s, it in zip(ss, its)]
        st = sched.stats()
    for i in range(2):
        assert_same(got[i], solo(tts, voice, i, params[i]), f"session {i}")
    assert 2 in steps and st.spec_rounds > 0  # both kinds of step ran


def test_a_failing_round_fails_its_session_only(tts, voice, monkeypatch):
    sched, pool, _ = spec_scheduler(tts, SpecConfig(k=2, draft="target", adaptive=False), slots=1)
    calls = {"n": 0}
    real = SpecSession.round

    def flaky(self):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return real(self)

    monkeypatch.setattr(SpecSession, "round", flaky)
    with sched:
        s = make(tts, voice, pool, 0, GREEDY)
        with pytest.raises(RuntimeError, match="boom"):
            list(sched.run(s))
        assert pool.in_use == 0
        s = make(tts, voice, pool, 1, GREEDY)  # the engine keeps serving
        assert_same(outcome(s, list(sched.run(s))), solo(tts, voice, 1, GREEDY), "after a failure")


def test_rounds_keep_the_plain_joint_distribution(tts, voice, small_t3):
    """Tokens 0..2 of sessions decoded with rounds of k = 2 against a weak draft (the target's first
    layer), through `SpecSession` and the scheduler's row sampler, have the exact joint
    distribution of the plain chain (computed from the plain loop's recorded probabilities)."""
    t3 = small_t3
    plain = SamplingParams(top_k=3, temperature=1.0, max_new_tokens=3)
    params = replace(plain, ignore_eos=True)
    with torch.inference_mode():
        cond = t3.conditioning(voice.speaker_emb, voice.prompt_tokens, voice.exaggeration)
    text = tts.text_ids("شكرا جزيلا")  # a prompt on which this draft's acceptance is moderate (~0.4)
    first = next(iter_speech_tokens(t3, cond, text, plain, guard=None, forced_tokens=[0], record_probs=True)).probs
    joint = {}
    for a in first.nonzero().flatten().tolist():
        s1 = list(iter_speech_tokens(t3, cond, text, plain, guard=None, forced_tokens=[a, 0, 0], record_probs=True))
        for b in s1[1].probs.nonzero().flatten().tolist():
            s2 = list(iter_speech_tokens(t3, cond, text, plain, guard=None, forced_tokens=[a, b, 0], record_probs=True))
            for c in s2[2].probs.nonzero().flatten().tolist():
                joint[(a, b, c)] = float(first[a] * s1[1].probs[b] * s2[2].probs[c])
    assert t3.cfg.stop_speech not in itertools.chain.from_iterable(joint)
    spec = SpecConfig(k=2, draft=DraftT3(t3, DraftConfig(1)).eval(), adaptive=False)
    pool = KVPool(t3.cfg.llama, 1, CACHE_LEN)
    rows = RowSampler(t3, 1, max_text=CACHE_LEN - t3.cfg.len_cond)
    g = torch.Generator().manual_seed(0)
    keys = sorted(joint)
    index = {key: i for i, key in enumerate(keys)}
    counts = torch.zeros(len(keys))
    drafted = accepted = 0
    n = 400
    for _ in range(n):
        s = Session(t3, tts.s3gen, pool, text, voice, params, None, SCHEDULE, g)
        logits = s.begin(pool.lease(), rows)
        s.took(*rows.sample([0], logits[None]))
        s.accept(int(s.fed))
        sp = SpecSession(spec, s, rows)
        while len(s.ids) < 3:
            for tok, position in sp.round():
                s.took(tok, position)
                s.accept(int(tok))
        s.end()
        counts[index[tuple(s.ids[:3])]] += 1
        drafted, accepted = drafted + sp.stats.drafted, accepted + sp.stats.accepted
    assert 0.05 < accepted / drafted < 0.95  # both branches of the rejection sampler ran
    assert chi2_pvalue(counts, torch.tensor([joint[k] for k in keys]) * n) > P_FLOOR


def test_cancel_mid_stream_ends_quietly_and_frees_the_slot(tts, voice):
    sched, pool, _ = spec_scheduler(tts, SpecConfig(k=2, draft="target", adaptive=False), slots=1)
    with sched:
        s = make(tts, voice, pool, 1, SamplingParams(max_new_tokens=200, ignore_eos=True))
        it = sched.run(s)
        first = next(it)
        assert first.audio.size > 0
        s.cancel()
        rest = list(it)  # no error, no final chunk after the cancel
        assert all(not c.is_last for c in rest)
        assert len(s.ids) < 200
    assert pool.in_use == 0


def test_k_adapts_to_the_sessions_acceptance(tts, voice):
    """A random draft is almost always rejected: the session's k falls to 1; with draft = target
    (everything accepted) it climbs to k_max."""
    for draft, want in ((random_draft(tts.t3, 2, 7), 1), ("target", 8)):
        pool = KVPool(tts.t3.cfg.llama, 1, 256)  # room for 12 rounds of up to 9 tokens after the prompt
        rows = RowSampler(tts.t3, 1, max_text=CACHE_LEN - tts.t3.cfg.len_cond)
        s = make(tts, voice, pool, 1, SamplingParams(max_new_tokens=150, ignore_eos=True))
        s.took(*rows.sample([0], s.begin(pool.lease(), rows)[None]))
        s.accept(int(s.fed))
        sp = SpecSession(SpecConfig(k=4, draft=draft), s, rows)
        for _ in range(12):
            for tok, position in sp.round():
                s.took(tok, position)
                s.accept(int(tok))
        s.end()
        assert sp.ctl.k == want, draft
