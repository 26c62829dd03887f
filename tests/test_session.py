"""Sessions and the fast decode loop, against the plain reference loop (itself proven equal to the
official loop in test_sampling_parity), on a tiny random checkpoint."""

from __future__ import annotations

import pytest
import torch

from conftest import load_golden
from nutq.engine import decode as decode_mod
from nutq.engine.generate import generate_speech_tokens
from nutq.engine.kv_pool import KVPool, PoolExhausted
from nutq.engine.sampling import SamplingParams
from nutq.engine.session import Session, resolve_guard
from nutq.engine.chunking import ChunkSchedule
from nutq.models.random_init import randomize_module
from nutq.models.t3 import T3, T3_TINY
from nutq.tts import TTS

TEXT = "مرحبا بكم في نطق"


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint, max_sessions=2)


def _session(tts, params, seed=0, **kw) -> Session:
    ids = tts.text_ids(TEXT)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 1)
    return Session(tts.t3, tts.s3gen, tts.pool, ids, tts.default_voice, params, generator=gen,
                   noise_generator=noise, **kw)


def _plain(tts, params, seed=0):
    v = tts.default_voice
    with torch.inference_mode():
        cond = tts.t3.conditioning(v.speaker_emb, v.prompt_tokens, v.exaggeration)
    return generate_speech_tokens(tts.t3, cond, tts.text_ids(TEXT), params,
                                  generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("params", [SamplingParams(max_new_tokens=40),
                                    SamplingParams(max_new_tokens=25, greedy=True, temperature=0),
                                    SamplingParams(max_new_tokens=30, top_p=0.8, top_k=50, repetition_penalty=1.3)])
def test_session_tokens_equal_the_plain_loop(tts, params):
    for seed in (0, 1, 2):
        ref = _plain(tts, params, seed)
        s = _session(tts, params, seed)
        chunks = list(s.run())
        assert s.tokens == ref.tokens
        assert s.stopped_on_eos == ref.stopped_on_eos
        assert s.guard_counts == ref.guard_counts
        # every token becomes exactly 960 samples of audio, delivered across the chunks
        assert sum(len(c.audio) for c in chunks) == 960 * len(s.tokens)
        assert chunks[-1].is_last and not any(c.is_last for c in chunks[:-1])
    assert tts.pool.in_use == 0


def test_forced_tokens_reproduce_the_official_distributions():
    """The engine's per-row sampling chain, replaying the official tokens, samples from the same
    distributions as the official loop (golden from tools/parity/t3.py)."""
    g, meta = load_golden("t3")
    t3 = randomize_module(T3(T3_TINY), meta["seed"]).eval()
    params = SamplingParams(cfg_weight=meta["cfg_weight"], temperature=meta["temperature"],
                            repetition_penalty=meta["repetition_penalty"], min_p=meta["min_p"],
                            top_p=meta["top_p"], max_new_tokens=meta["steps"])
    with torch.inference_mode():
        cond = t3.conditioning(g["in.speaker"], g["in.prompt"], meta["emotion"])
    pool = KVPool(t3.cfg.llama, 1, 512)
    from nutq.engine.alignment import OFFICIAL, AlignmentGuard
    from nutq.engine.sampling import RowParams, cfg_mix, processed_logits

    rp = RowParams.of([params], t3.cfg.speech_vocab)
    seen = torch.zeros(1, t3.cfg.speech_vocab, dtype=torch.bool)
    seen[0, t3.cfg.start_speech] = True
    recorded = []

    text = g["in.text"]
    slot = pool.lease()
    logits, attn, L = decode_mod.prefill(t3, cond, text, slot.cache, OFFICIAL.heads)
    guard = AlignmentGuard((t3.cfg.len_cond, t3.cfg.len_cond + text.shape[-1]))
    fed = t3.cfg.start_speech
    for step in range(meta["steps"]):
        d = guard.observe(attn, fed)
        mixed = AlignmentGuard.apply(cfg_mix(logits[0:1], logits[1:2], rp.column(0)), d, t3.cfg.stop_speech)
        recorded.append(processed_logits(mixed, seen, rp).softmax(-1)[0])
        tok = g["in.forced"][step:step + 1]
        if int(tok) == t3.cfg.stop_speech:
            break
        seen[0, tok] = True
        fed = int(tok)
        logits, attn = decode_mod.decode_step(t3, tok, step + 1, L + step, slot.cache, OFFICIAL.heads)
    slot.release()
    probs = torch.stack(recorded)
    ref = g["out.probs"][: len(probs)]
    assert torch.equal(probs > 0, ref > 0)
    assert (probs - ref).abs().max() <= 1e-5


def test_ignore_eos_generates_exactly_max_new_tokens(tts):
    s = _session(tts, SamplingParams(max_new_tokens=17, ignore_eos=True), guard=None)
    chunks = list(s.run())
    assert s.timings.tokens == 17 and not s.stopped_on_eos
    assert sum(len(c.audio) for c in chunks) == 960 * len(s.tokens)
    with pytest.raises(ValueError, match="always stops on EOS"):
        _plain(tts, SamplingParams(ignore_eos=True))


def test_slot_is_released_on_eos_error_cancel_and_abandon(tts, monkeypatch):
    pool = tts.pool
    # consumer stops iterating after the first chunk: closing the generator frees the slot
    s = _session(tts, SamplingParams(max_new_tokens=30, ignore_eos=True), schedule=ChunkSchedule(first=2))
    gen = s.run()
    next(gen)
    assert pool.in_use == 1
    gen.close()
    assert pool.in_use == 0
    # an error inside a decode step
    calls = {"n": 0}
    real = decode_mod.decode_step

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real(*a, **k)

    import nutq.engine.session as session_mod

    monkeypatch.setattr(session_mod, "decode_step", failing)
    with pytest.raises(RuntimeError, match="boom"):
        list(_session(tts, SamplingParams(max_new_tokens=30, ignore_eos=True)).run())
    assert pool.in_use == 0


def test_cancel_stops_within_one_step(tts, monkeypatch):
    import nutq.engine.session as session_mod

    steps = {"n": 0}
    real = decode_mod.decode_step

    def counting(*a, **k):
        steps["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(session_mod, "decode_step", counting)
    s = _session(tts, SamplingParams(max_new_tokens=200, ignore_eos=True), schedule=ChunkSchedule(first=2))
    got = []
    for c in s.run():
        got.append(c)
        if len(got) == 1:
            at_cancel = steps["n"]
            s.cancel()
    assert s.cancelled and steps["n"] <= at_cancel + 1
    assert len(got) == 1 and tts.pool.in_use == 0


def test_pool_leases_views_and_refuses_when_full(tts):
    pool = KVPool(tts.t3.cfg.llama, 2, 64)
    a, b = pool.lease(), pool.lease()
    with pytest.raises(PoolExhausted):
        pool.lease()
    a.cache.k[0, 1, 0, 5, 0] = 7.0  # writes through the view land in the pool's rows 0-1
    assert pool.cache.k[0, 1, 0, 5, 0] == 7.0 and b.index == 1
    a.release()
    a.release()  # idempotent
    assert pool.in_use == 1
    c = pool.lease()
    assert c.index == 0


def test_prompt_longer_than_the_cache_is_refused(tts):
    pool = KVPool(tts.t3.cfg.llama, 1, 40)  # shorter than conditioning + text
    s = Session(tts.t3, tts.s3gen, pool, tts.text_ids(TEXT), tts.default_voice, SamplingParams(max_new_tokens=5))
    with pytest.raises(ValueError, match="does not fit a KV cache"):
        list(s.run())
    assert pool.in_use == 0


def test_guard_profiles_by_name():
    assert resolve_guard(None) is None
    assert resolve_guard("official").token_repetition == 2
    with pytest.raises(ValueError, match="unknown alignment guard profile"):
        resolve_guard("loud")
