"""Vocoder renders of several sessions batched into one flow call equal each session's solo render.

Tiny random checkpoint, CPU. Tolerances: the batched flow runs other matmul shapes and a key-padding
bias in attention, so rows match the solo flow up to float rounding, not bit for bit. Observed
(fp32, 1 thread): mel max |diff| 2.4e-6 on values up to ~6 (tolerance 1e-4); streamed audio max
|diff| 1.5e-5 (streams) and 2.2e-5 (scheduler) on audio of std ~0.3 (tolerance 1e-4). Real mix-ups
are orders larger: padding leaking into a row moves its mel by 1e-2..0.25
(`test_padded_rows_need_isolation`); another row's noise or the look-ahead cut taken from the
padded end fail every test here.

Through the scheduler with the meanflow decoder the audio rounding is larger (random tiny HiFT
weights amplify it): measured 7.6e-5 to 9.5e-5 per session with the flow encoder's explicit
attention scores and 0 to 1.04e-4 with SDPA and a positional bias (its current form), whose mels
are as close to an fp64 render as the explicit form's (both <= 2.4e-6 on all four rows of
`rows`, batched and solo). Same error class, so that test allows `SCHEDULER_AUDIO_ATOL`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from nutq.engine.chunking import ChunkSchedule
from nutq.engine.kv_pool import KVPool
from nutq.engine.sampling import SamplingParams
from nutq.engine.scheduler import LoopStep, Scheduler
from nutq.engine.session import Session
from nutq.engine.token2wav import FlowRequest, StreamingToWav, flow_mel, flow_mels
from nutq.models.random_init import randomize_module
from nutq.models.registry import build, build_meanflow, configs_for_size
from nutq.models.s3gen.model import RefDict
from nutq.tts import TTS

MEL_ATOL = 1e-4
AUDIO_ATOL = 1e-4
SCHEDULER_AUDIO_ATOL = 2e-4  # see the module docstring: meanflow through the scheduler
TEXTS = ("مرحبا بكم في نطق", "هذا نص آخر أطول قليلا من الأول", "كيف حالك؟", "نص رابع للتجربة")
CACHE_LEN = 128
P = SamplingParams(max_new_tokens=24)
SCHEDULE = ChunkSchedule(first=3, max_size=6)  # several renders per session


# ---------------------------------------------------------------- flow rows


@pytest.fixture(scope="module", params=["cfm", "meanflow"])
def s3gen(request):
    cfg = configs_for_size("tiny")["s3gen"]
    model = build_meanflow(cfg) if request.param == "meanflow" else build("s3gen", cfg)
    return randomize_module(model, 2, keep_suffixes=("_mel_filters", "window")).eval()


def random_ref(n_prompt: int, seed: int) -> RefDict:
    g = torch.Generator().manual_seed(seed)
    return RefDict(torch.randint(0, 6561, (1, n_prompt), generator=g), torch.tensor([n_prompt]),
                   -5.0 + 2.0 * torch.randn(1, 2 * n_prompt, 80, generator=g), torch.randn(1, 192, generator=g))


def request(n_prompt: int, n_new: int, finalize: bool, seed: int, solver) -> FlowRequest:
    g = torch.Generator().manual_seed(100 + seed)
    return FlowRequest(torch.randint(0, 6561, (1, n_new), generator=g), random_ref(n_prompt, seed), finalize,
                       torch.randn(1, 80, 2 * (n_prompt + 60), generator=g), solver)


@pytest.fixture(scope="module")
def rows(s3gen):
    """Two voices (25- and 40-token prompts), 7..50 new tokens, finalize mixed: every row is padded
    except the longest, and the longest voice is not the longest row."""
    solver = s3gen.default_solver()
    return [request(25, 10, False, 1, solver), request(40, 33, True, 2, solver), request(25, 7, True, 3, solver),
            request(30, 50, False, 4, solver)]


def test_batched_flow_rows_equal_solo_flow(s3gen, rows):
    batched = flow_mels(s3gen, rows)
    for i, (r, mel) in enumerate(zip(rows, batched)):
        want = flow_mel(s3gen, r)
        assert mel.shape == want.shape, f"row {i}: {tuple(mel.shape)} frames, solo gives {tuple(want.shape)}"
        err = (mel - want).abs().max().item()
        assert err <= MEL_ATOL, f"row {i} (finalize={r.finalize}): batched differs from solo by {err:.3g}"


def test_a_batch_of_one_is_the_solo_flow(s3gen, rows):
    # Same shapes, no padding: the packed call is the solo call, bit for bit.
    for r in rows:
        assert torch.equal(flow_mels(s3gen, [r])[0], flow_mel(s3gen, r))


def test_padded_rows_need_isolation(s3gen, rows, monkeypatch):
    """Why `isolate_rows` exists: without it the encoder's look-ahead conv reads a padded row's
    padding (non-zero after the input layer), and that row's mel moves far beyond rounding."""
    real = s3gen.flow.encode
    monkeypatch.setattr(s3gen.flow, "encode", lambda *a, **k: real(*a, **{**k, "isolate_rows": False}))
    errs = [(m - flow_mel(s3gen, r)).abs().max().item() for r, m in zip(rows, flow_mels(s3gen, rows))]
    assert errs[3] <= MEL_ATOL, "the longest row has no padding and must be unaffected"
    assert min(errs[:3]) > 1e-3, f"padded rows should show the leak without isolation: {errs}"


def test_mixed_solvers_are_refused(s3gen, rows):
    other = replace(rows[1], solver=replace(rows[1].solver, n_timesteps=5))
    with pytest.raises(ValueError, match="one solver"):
        flow_mels(s3gen, [rows[0], other])


def test_streams_rendered_together_equal_streams_rendered_alone(s3gen):
    """plan -> one batched flow -> finish, session by session, as the vocoder thread does."""
    schedule = ChunkSchedule(first=3, max_size=6)
    specs = [(25, 40, 1), (40, 31, 2), (25, 23, 3)]  # (prompt tokens, tokens, seed)
    tokens = [torch.randint(0, 6561, (n,), generator=torch.Generator().manual_seed(s)).tolist() for _, n, s in specs]

    def stream(i: int) -> StreamingToWav:
        p, _, seed = specs[i]
        return StreamingToWav(s3gen, random_ref(p, seed), schedule, generator=torch.Generator().manual_seed(seed),
                              max_tokens=60)

    alone = []
    for i, toks in enumerate(tokens):
        st = stream(i)
        alone.append([a for a in (st.push([t]) for t in toks) if a is not None] + [st.flush()])

    together = [[] for _ in specs]
    sts = [stream(i) for i in range(len(specs))]
    batch_sizes = []
    for k in range(max(len(t) for t in tokens) + 1):  # token k for every session still going, or its flush
        due = []
        for i, (st, toks) in enumerate(zip(sts, tokens)):
            if k < len(toks):
                if st.add([toks[k]]):
                    due.append((i, st.plan(finalize=False)))
            elif k == len(toks):
                due.append((i, st.plan(finalize=True)))
        if due:
            batch_sizes.append(len(due))
            for (i, req), mel in zip(due, flow_mels(s3gen, [r for _, r in due])):
                together[i].append(sts[i].finish(req, mel, flow_ms=0.0))

    assert max(batch_sizes) >= 2, "the test must batch renders of different sessions"
    for i, (got, want) in enumerate(zip(together, alone)):
        assert [len(c) for c in got] == [len(c) for c in want], f"session {i}: chunk sizes differ"
        err = max((a - b).abs().max().item() for a, b in zip(got, want) if len(a))
        assert err <= AUDIO_ATOL, f"session {i}: batched stream differs from solo by {err:.3g}"


def test_a_stale_plan_is_refused(s3gen):
    st = StreamingToWav(s3gen, random_ref(25, 1), ChunkSchedule(first=3, max_size=6),
                        generator=torch.Generator().manual_seed(1), max_tokens=30)
    while not st.add([7]):
        pass
    req = st.plan(finalize=False)
    mel = flow_mel(s3gen, req)
    st.add([8])
    with pytest.raises(ValueError, match="stale"):
        st.finish(req, mel, 0.0)


# ---------------------------------------------------------------- through the scheduler


@pytest.fixture(scope="module", params=["cfm", "meanflow"])
def tts(tiny_checkpoint, request):
    return TTS.from_local(tiny_checkpoint, flow=request.param)


def cut_voice(voice, start: int, n: int):
    """A voice whose vocoder prompt is n tokens of the default one, from `start`: a short prompt keeps
    renders fast, and two cuts give two voices with different prompt lengths."""
    g = voice.gen
    return replace(voice, gen=replace(g, prompt_token=g.prompt_token[:, start:start + n],
                                      prompt_token_len=torch.tensor([n]),
                                      prompt_feat=g.prompt_feat[:, 2 * start:2 * (start + n)], prompt_feat_len=None))


@pytest.fixture(scope="module")
def voices(tts):
    return [cut_voice(tts.default_voice, 0, 25), cut_voice(tts.default_voice, 30, 18)]


def make_session(tts, voice, pool, i: int) -> Session:
    return Session(tts.t3, tts.s3gen, pool, tts.text_ids(TEXTS[i]), voice, P, schedule=SCHEDULE,
                   generator=torch.Generator().manual_seed(i), noise_generator=torch.Generator().manual_seed(i + 1000),
                   solver=tts.flow.solver())


def run_solo(tts, voice, i: int) -> tuple[list[int], list[np.ndarray]]:
    s = make_session(tts, voice, KVPool(tts.t3.cfg.llama, 1, CACHE_LEN), i)
    audio = [c.audio for c in s.run()]
    return list(s.tokens), audio


def hold_first_render(s3gen, monkeypatch) -> threading.Event:
    """Park the vocoder thread in its first (solo) flow call until the returned event is set.
    Meanwhile every session decodes to its end, so all their renders are queued and those due at
    the same token count meet at the head of the queue: batching is then certain, not a race."""
    go, real, calls = threading.Event(), s3gen.flow_mel, []

    def flow_mel_held(*a, **k):
        if not calls:
            calls.append(1)
            assert go.wait(60), "the test never released the vocoder"
        return real(*a, **k)

    monkeypatch.setattr(s3gen, "flow_mel", flow_mel_held)
    return go


def wait_decoded(sched: Scheduler, n: int) -> None:
    deadline = time.monotonic() + 60
    while not (sched.stats().admitted == n and sched.stats().active == 0):
        assert time.monotonic() < deadline, "the sessions did not finish decoding"
        time.sleep(0.01)


def test_sessions_vocoded_in_batches_equal_each_alone(tts, voices, monkeypatch):
    n = 4
    who = [(i, voices[i % 2]) for i in range(n)]  # two voices, four texts, ends at different tokens
    want = [run_solo(tts, v, i) for i, v in who]
    pool = KVPool(tts.t3.cfg.llama, n, CACHE_LEN)
    go = hold_first_render(tts.s3gen, monkeypatch)
    with Scheduler(tts.t3, tts.s3gen, pool, LoopStep(tts.t3, pool), vocoder_batch=8) as sched:
        ss = [make_session(tts, v, pool, i) for i, v in who]
        its = [sched.run(s) for s in ss]
        wait_decoded(sched, n)
        go.set()
        got = [[c.audio for c in it] for it in its]
        st = sched.stats()
    assert st.vocoder_batches >= 2 and st.vocoder_rows >= 2 * st.vocoder_batches, st
    assert st.vocoder_retries == 0
    for i, (s, audio, (tokens, ref_audio)) in enumerate(zip(ss, got, want)):
        assert s.tokens == tokens, f"session {i}: tokens differ from the solo run"
        assert [len(a) for a in audio] == [len(a) for a in ref_audio], f"session {i}: chunk sizes differ"
        err = max(float(np.abs(a - b).max()) for a, b in zip(audio, ref_audio) if len(a))
        assert err <= SCHEDULER_AUDIO_ATOL, f"session {i}: audio differs from the solo run by {err:.3g}"


def test_a_failing_row_fails_its_session_only(tts, voices, monkeypatch):
    """A voice whose prompt mel has the wrong width breaks any flow call it is in. The batched call
    fails, every row is retried alone: the broken session gets the error, the others their audio."""
    g = voices[0].gen
    broken = replace(voices[0], gen=replace(g, prompt_feat=g.prompt_feat[:, :, :79]))
    who = [(0, voices[0]), (1, broken), (2, voices[1])]  # not first: the first render runs alone
    want = {i: run_solo(tts, v, i) for i, v in who if v is not broken}
    pool = KVPool(tts.t3.cfg.llama, len(who), CACHE_LEN)
    go = hold_first_render(tts.s3gen, monkeypatch)
    with Scheduler(tts.t3, tts.s3gen, pool, LoopStep(tts.t3, pool), vocoder_batch=8) as sched:
        ss = [make_session(tts, v, pool, i) for i, v in who]
        its = [sched.run(s) for s in ss]
        wait_decoded(sched, len(who))
        go.set()
        with pytest.raises(RuntimeError):
            list(its[1])
        got = {i: [c.audio for c in its[k]] for k, (i, v) in enumerate(who) if v is not broken}
        st = sched.stats()
    assert st.vocoder_retries >= 1, "the broken row must have been in a batched call"
    for k, (i, v) in enumerate(who):
        if v is broken:
            continue
        tokens, ref_audio = want[i]
        assert ss[k].tokens == tokens
        assert [len(a) for a in got[i]] == [len(a) for a in ref_audio], f"session {i}: chunk sizes differ"
        err = max(float(np.abs(a - b).max()) for a, b in zip(got[i], ref_audio) if len(a))
        assert err <= AUDIO_ATOL, f"session {i} next to the failing one: audio differs by {err:.3g}"
