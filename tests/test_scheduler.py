"""The scheduler: sessions decoded together equal the same sessions run alone; join/leave at step
boundaries, admission limit, fairness, errors kept to their session; tiny random checkpoint."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from nutq.engine.alignment import OFFICIAL
from nutq.engine.batched_step import BatchedStep
from nutq.engine.chunking import ChunkSchedule
from nutq.engine.kv_pool import KVPool, PoolExhausted
from nutq.engine.sampling import SamplingParams
from nutq.engine.scheduler import LoopStep, Scheduler, SchedulerBusy, SchedulerClosed
from nutq.engine.session import Session
from nutq.engine.voice import Voice
from nutq.errors import EngineError
from nutq.tts import TTS

from tests.oracle import plain_stream

TEXTS = ("مرحبا بكم في نطق", "هذا نص آخر أطول قليلا من الأول", "كيف حالك؟")
PROMPT_TOKENS = 25  # a 1 s vocoder prompt keeps every flow render fast (the T3 prompt stays whole)
CACHE_LEN = 128  # conditioning (34) + text (<= 37) + 2 BOS + speech tokens
LONG_CACHE = 1024
# Sessions that outlast anything a test does meanwhile (about 950 steps): cut short by the test.
LONG = SamplingParams(max_new_tokens=1000, ignore_eos=True)
P = SamplingParams(max_new_tokens=24)  # EOS allowed: the official guard and sampling decide
SCHEDULE = ChunkSchedule(first=3, max_size=6)  # several chunks per session, so seams are compared


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint)


@pytest.fixture(scope="module")
def voice(tts) -> Voice:
    g = tts.default_voice.gen
    short = replace(g, prompt_token=g.prompt_token[:, :PROMPT_TOKENS], prompt_token_len=torch.tensor([PROMPT_TOKENS]),
                    prompt_feat=g.prompt_feat[:, :2 * PROMPT_TOKENS], prompt_feat_len=None)
    return replace(tts.default_voice, gen=short)


class Recorder:
    """Wraps a step and keeps the pool slots of every batch, in order (one tuple per step).
    `hook()` runs in the engine thread inside every step, after the batch is recorded: a way to
    act at a known step boundary without sleeping."""

    def __init__(self, step):
        self.step, self.batches, self.hook = step, [], lambda: None

    def __call__(self, slots, *args):
        self.batches.append(tuple(slots))
        self.hook()
        return self.step(slots, *args)

    def steps_of(self, session: Session) -> list[int]:
        """Indices of the steps that included `session` (slots are not reused within a test)."""
        return [k for k, batch in enumerate(self.batches) if session.slot is not None and session.slot.index in batch]


def make_session(tts, voice, pool, i: int, params=P, seed=None) -> Session:
    seed = i if seed is None else seed
    return Session(tts.t3, tts.s3gen, pool, tts.text_ids(TEXTS[i % len(TEXTS)]), voice, params,
                   schedule=SCHEDULE, generator=torch.Generator().manual_seed(seed),
                   noise_generator=torch.Generator().manual_seed(seed + 1000))


def outcome(session: Session, chunks) -> dict:
    return {"tokens": list(session.tokens), "eos": session.stopped_on_eos, "guard": session.guard_counts,
            "audio": [c.audio for c in chunks], "where": [(c.text_position, c.is_last) for c in chunks]}


def assert_same(got: dict, want: dict, who: str) -> None:
    assert got["tokens"] == want["tokens"], f"{who}: tokens differ from the solo run"
    assert (got["eos"], got["guard"], got["where"]) == (want["eos"], want["guard"], want["where"]), who
    # Same tokens, same noise, vocoded per session with the same pushes: bit-identical audio.
    assert len(got["audio"]) == len(want["audio"]) and all(
        np.array_equal(a, b) for a, b in zip(got["audio"], want["audio"])), f"{who}: audio differs"


def solo(tts, voice, i: int, params=P, seed=None) -> dict:
    pool = KVPool(tts.t3.cfg.llama, 1, CACHE_LEN)
    s = make_session(tts, voice, pool, i, params, seed)
    return outcome(s, list(s.run()))


STEPS = {
    "loop": lambda t3, pool: LoopStep(t3, pool, OFFICIAL.heads),  # each session's solo decode_step
    "batched": lambda t3, pool: BatchedStep(t3, pool, OFFICIAL.heads),  # one forward, attention over max(pos)+1
    "static": lambda t3, pool: BatchedStep(t3, pool, OFFICIAL.heads, static=True),  # CUDA-graph shapes, eager
}


def scheduler(tts, slots: int, cache_len: int = CACHE_LEN, step: str = "loop",
              **kw) -> tuple[Scheduler, Recorder, KVPool]:
    pool = KVPool(tts.t3.cfg.llama, slots, cache_len)
    rec = Recorder(STEPS[step](tts.t3, pool))
    return Scheduler(tts.t3, tts.s3gen, pool, rec, **kw), rec, pool


@pytest.fixture(scope="module")
def solos(tts, voice):
    return [solo(tts, voice, i) for i in range(3)]


@pytest.mark.parametrize("step", list(STEPS))
def test_sessions_together_equal_each_alone(tts, voice, solos, step):
    """With the loop step this is exact by construction; the batched step's logits differ from solo
    by float rounding (~1e-6, tests/test_batched_step.py), which must not change a single draw."""
    sched, rec, pool = scheduler(tts, 4, step=step)
    with sched:
        # all three at once
        ss = [make_session(tts, voice, pool, i) for i in range(3)]
        its = [sched.run(s) for s in ss]
        for i, (s, it) in enumerate(zip(ss, its)):
            assert_same(outcome(s, list(it)), solos[i], f"together, session {i}")
        assert max(len(b) for b in rec.batches) == 3
        # staggered: session 1 is submitted during the 3rd step of session 0, session 2 during the 6th
        assert len(solos[0]["tokens"]) > 8, "session 0 must outlive the joins (pick another text or seed)"
        n0 = len(rec.batches)
        ss = [make_session(tts, voice, pool, i) for i in range(3)]
        its = {}
        joins = {n0 + 3: 1, n0 + 6: 2}  # the engine is idle now: n0 stays put until session 0 starts

        def join():
            i = joins.pop(len(rec.batches), None)
            if i is not None:
                its[i] = sched.run(ss[i])

        rec.hook = join
        its[0] = sched.run(ss[0])
        for i in range(3):  # session 0 ends after both joins, so 1 and 2 exist when read
            assert_same(outcome(ss[i], list(its[i])), solos[i], f"staggered, session {i}")
        sizes = [len(b) for b in rec.batches[n0:]]
        assert sizes[:7] == [1, 1, 1, 2, 2, 2, 3], "each newcomer joins at the next step boundary"
    assert pool.in_use == 0


def test_sessions_leave_on_limit_cancel_and_closed_consumer(tts, voice):
    short = SamplingParams(max_new_tokens=6, ignore_eos=True)
    mid = SamplingParams(max_new_tokens=30, ignore_eos=True)
    want = [solo(tts, voice, 0, short), solo(tts, voice, 1, mid)]
    sched, rec, pool = scheduler(tts, 4, LONG_CACHE)
    with sched:
        a, b = make_session(tts, voice, pool, 0, short), make_session(tts, voice, pool, 1, mid)
        c, d = make_session(tts, voice, pool, 2, LONG), make_session(tts, voice, pool, 0, LONG, seed=7)
        # c is cancelled during its 12th step: it leaves at the boundary after it
        rec.hook = lambda: len(rec.steps_of(c)) == 12 and c.cancel()
        ia, ib, ic, id_ = (sched.run(s) for s in (a, b, c, d))
        assert_same(outcome(a, list(ia)), want[0], "the session at its limit")
        # a drew 6 tokens: 1 after the prefill, 5 in steps (the 6th is fed to none)
        assert len(rec.steps_of(a)) == 5
        got_c = list(ic)  # ends quietly: no final chunk, and only the audio of 13 tokens at most
        assert not any(ch.is_last for ch in got_c) and sum(len(ch.audio) for ch in got_c) <= 13 * 960
        assert len(rec.steps_of(c)) == 12
        # d's consumer stops listening: closing its iterator returns once d's slot is free
        next(id_)
        id_.close()
        assert d.slot.cache is None, "closing the consumer must release the session's slot"
        n_closed = len(rec.batches)
        # e is dropped before it was ever read: closing frees whatever it got (a slot or a place in line)
        e = make_session(tts, voice, pool, 2, LONG, seed=8)
        sched.run(e).close()
        assert e.slot is None or e.slot.cache is None
        assert_same(outcome(b, list(ib)), want[1], "the session that stayed")
        assert rec.steps_of(d)[-1] < n_closed
    assert pool.in_use == 0


def test_admission_waits_for_a_slot_and_refuses_beyond_the_queue(tts, voice, solos):
    sched, rec, pool = scheduler(tts, 2, LONG_CACHE, max_queue=1)
    with sched:
        a, b = make_session(tts, voice, pool, 0, LONG), make_session(tts, voice, pool, 1, LONG)
        ia, ib = sched.run(a), sched.run(b)
        c = make_session(tts, voice, pool, 2)
        ic = sched.run(c)  # no slot: waits in the queue (its one place)
        with pytest.raises(SchedulerBusy, match="wait already") as busy:
            sched.run(make_session(tts, voice, pool, 0))
        assert isinstance(busy.value, PoolExhausted)  # the server maps it to 429 as it is
        next(ia), next(ib)
        assert sched.stats().queued == 1 and c.slot is None
        ia.close()  # a slot frees: c is admitted at the next boundary
        assert_same(outcome(c, list(ic)), solos[2], "the session that waited")
        assert c.timings.queue_s > 0
        assert max(len(batch) for batch in rec.batches) == 2
        ib.close()
        st = sched.stats()
        assert (st.admitted, st.rejected, st.queued, st.active) == (3, 1, 0, 0)
    assert pool.in_use == 0


def test_a_streams_next_phrase_goes_before_new_requests_and_is_never_refused(tts, voice):
    sched, rec, pool = scheduler(tts, 1, LONG_CACHE, max_queue=1)
    with sched:
        a = make_session(tts, voice, pool, 0, LONG)
        ia = sched.run(a)
        next(ia)  # a holds the only slot
        newcomer = make_session(tts, voice, pool, 1)
        i_new = sched.run(newcomer)  # the queue's one place
        with pytest.raises(SchedulerBusy):
            sched.run(make_session(tts, voice, pool, 2))
        nxt = make_session(tts, voice, pool, 2)
        i_next = sched.run(nxt, continuation=True)  # over the limit, yet accepted, and first in line
        assert sched.stats().queued == 2
        ia.close()
        assert list(i_next) and list(i_new)

        def first_token_at(s: Session) -> float:
            return s.timings.t_request + s.timings.first_token_s

        # one slot: whichever was admitted first ran to its end before the other began
        assert first_token_at(nxt) < first_token_at(newcomer), "a new request went before the continuation"
    assert pool.in_use == 0


def test_every_active_session_gets_one_token_per_step(tts, voice):
    params = [SamplingParams(max_new_tokens=n, ignore_eos=True) for n in (8, 14, 20)]
    sched, rec, pool = scheduler(tts, 4)
    with sched:
        ss = [make_session(tts, voice, pool, i, p) for i, p in enumerate(params)]
        its = [sched.run(s) for s in ss]
        for it in its:
            list(it)
        st = sched.stats()
    for s, p in zip(ss, params):
        steps = rec.steps_of(s)
        # a session draws its first token after the prefill, then one per step it is in, and is
        # in every step from its first to its last: no session is skipped or served twice
        assert len(steps) == p.max_new_tokens - 1
        assert steps == list(range(steps[0], steps[0] + len(steps)))
        assert all(len(set(batch)) == len(batch) for batch in rec.batches)
    assert st.tokens == sum(p.max_new_tokens for p in params)
    assert st.steps == len(rec.batches) and st.mean_batch == pytest.approx(
        sum(map(len, rec.batches)) / len(rec.batches))


def test_a_failing_session_fails_alone(tts, voice, solos):
    sched, rec, pool = scheduler(tts, 4)
    with sched:
        ss = [make_session(tts, voice, pool, i) for i in range(3)]
        real = ss[1].vocode
        pushed = []

        def failing(tok, position=None):
            pushed.append(tok)
            if len(pushed) == 4:
                raise RuntimeError("vocoder exploded")
            return real(tok, position)

        ss[1].vocode = failing
        too_long = Session(tts.t3, tts.s3gen, pool, tts.text_ids("مرحبا " * 30), voice, P)
        its = [sched.run(s) for s in [*ss, too_long]]
        with pytest.raises(RuntimeError, match="vocoder exploded"):
            list(its[1])
        with pytest.raises(ValueError, match="does not fit a KV cache"):
            list(its[3])
        for i in (0, 2):
            assert_same(outcome(ss[i], list(its[i])), solos[i], f"session {i} next to the failing one")
    assert pool.in_use == 0


def test_close_fails_unfinished_sessions(tts, voice):
    sched, _, pool = scheduler(tts, 1, LONG_CACHE)
    a, b = make_session(tts, voice, pool, 0, LONG), make_session(tts, voice, pool, 1, LONG)
    ia, ib = sched.run(a), sched.run(b)
    next(ia)
    sched.close()
    for it in (ia, ib):
        with pytest.raises(SchedulerClosed):
            list(it)
    with pytest.raises(SchedulerClosed):
        sched.run(make_session(tts, voice, pool, 2))
    assert pool.in_use == 0


def test_sessions_must_match_the_scheduler(tts, voice):
    sched, _, pool = scheduler(tts, 1)
    with sched:
        other = KVPool(tts.t3.cfg.llama, 1, CACHE_LEN)
        with pytest.raises(EngineError, match="pool"):
            sched.run(make_session(tts, voice, other, 0))
        s = make_session(tts, voice, pool, 0)
        s.guard = replace(s.guard, heads=((1, 0),))
        with pytest.raises(EngineError, match="heads"):
            sched.run(s)


def test_tts_stream_through_the_scheduler_equals_the_plain_stream(tiny_checkpoint, tts, voice):
    text = "مرحبا بكم. هذا نص قصير؟ نعم."
    params = SamplingParams(max_new_tokens=16)
    plain = list(plain_stream(tts, text, voice, params=params, seed=3, schedule=SCHEDULE))
    batched = TTS.from_local(tiny_checkpoint, max_sessions=2, max_cache_len=CACHE_LEN)
    try:
        got = list(batched.stream(text, voice, params=params, seed=3, schedule=SCHEDULE))
        assert batched.scheduler_stats().admitted == len(batched.phrases(text))
    finally:
        batched.close()
    assert [(c.index, c.phrase_index, c.text_position, c.is_final) for c in got] == \
        [(c.index, c.phrase_index, c.text_position, c.is_final) for c in plain]
    assert all(np.array_equal(a.audio, b.audio) for a, b in zip(got, plain))
    assert batched.pool.in_use == 0


def test_64_sessions_at_once(tts, voice):
    n = 64
    params = SamplingParams(max_new_tokens=5)
    sched, rec, pool = scheduler(tts, n, 80, step="batched")  # 80 positions: prompt (<= 73) + 5 tokens
    with sched:
        ss = [make_session(tts, voice, pool, i, params) for i in range(n)]
        its = [sched.run(s) for s in ss]
        outs = [list(it) for it in its]  # each session's queue holds its chunks until read
        st = sched.stats()
    assert all(o and o[-1].is_last for o in outs)
    assert all(sum(len(c.audio) for c in o) == 960 * len(s.tokens) for s, o in zip(ss, outs))
    assert st.admitted == n and st.tokens == sum(s.timings.tokens + s.stopped_on_eos for s in ss)
    assert max(len(b) for b in rec.batches) > n // 2  # they really were stepped together
    assert pool.in_use == 0
