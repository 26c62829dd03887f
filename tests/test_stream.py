"""The public streaming API: `TTS.stream` / `TTS.astream` on a tiny random checkpoint."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from nutq.engine.sampling import SamplingParams
from nutq.tts import SAMPLE_RATE, TTS

LONG = "مرحبا بكم. هذا نص طويل، فيه عدة جمل. هل تسمعني جيدا؟ نعم أسمعك."
P = SamplingParams(max_new_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint)


def test_long_text_streams_phrase_after_phrase(tts):
    phrases = tts.phrases(LONG)
    assert len(phrases) >= 3
    assert all(LONG[p.start:p.start + len(p.text)] == p.text for p in phrases)
    s = tts.stream(LONG, params=P, seed=1)
    chunks = list(s)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [c.is_final for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert sorted({c.phrase_index for c in chunks}) == list(range(len(phrases)))
    assert all(c.sample_rate == SAMPLE_RATE and c.audio.dtype == np.float32 for c in chunks)
    # 960 samples for every valid token, nothing lost or doubled at phrase joins (ids the forced
    # EOS of the guard turns into are dropped, as the official pipeline drops them)
    assert sum(len(c.audio) for c in chunks) == 960 * sum(len(x.tokens) for x in s.sessions)
    assert sum(len(x.tokens) for x in s.sessions) > len(phrases) * 6
    # timing fields: monotone, and the first-audio latency is the first chunk's time
    times = [c.t_since_request for c in chunks]
    assert times == sorted(times) and chunks[0].first_audio_latency == pytest.approx(times[0])
    assert all(c.first_audio_latency == chunks[0].first_audio_latency for c in chunks)
    assert len(s.timings) == len(phrases) and all(t.tokens == 12 for t in s.timings)


def test_stream_is_seeded(tts):
    a = np.concatenate([c.audio for c in tts.stream("مرحبا بكم", params=P, seed=4)])
    b = np.concatenate([c.audio for c in tts.stream("مرحبا بكم", params=P, seed=4)])
    c = np.concatenate([c.audio for c in tts.stream("مرحبا بكم", params=P, seed=5)])
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_bad_input_fails_before_any_audio(tts):
    with pytest.raises(ValueError, match="nothing to say"):
        tts.stream(" ... ")
    with pytest.raises(ValueError, match="unknown alignment guard"):
        tts.stream("مرحبا", guard="nope")
    assert tts.pool.in_use == 0


def test_breaking_out_of_the_loop_frees_the_session(tts):
    s = tts.stream(LONG, params=SamplingParams(max_new_tokens=200, ignore_eos=True), seed=0)
    next(iter(s))
    assert tts.pool.in_use == 1
    s.close()
    assert tts.pool.in_use == 0
    with pytest.raises(StopIteration):
        next(s)


def test_cancel_from_another_thread_ends_the_stream(tts):
    s = tts.stream(LONG, params=SamplingParams(max_new_tokens=300, ignore_eos=True), seed=0)
    first = next(s)
    threading.Thread(target=s.cancel).start()
    rest = list(s)
    assert first.index == 0 and all(not c.is_final for c in rest)
    assert sum(len(c.audio) for c in rest) < 300 * 960 and tts.pool.in_use == 0


def test_astream_matches_stream_and_cancels(tts):
    sync = [c.audio for c in tts.stream(LONG, params=P, seed=2)]

    async def collect():
        return [c.audio async for c in tts.astream(LONG, params=P, seed=2)]

    got = asyncio.run(collect())
    assert len(got) == len(sync) and all(np.array_equal(a, b) for a, b in zip(got, sync))

    async def cancel_early():
        stream = tts.astream(LONG, params=SamplingParams(max_new_tokens=300, ignore_eos=True), seed=0)
        async for _ in stream:
            break
        await stream.aclose()
        return stream

    stream = asyncio.run(cancel_early())
    assert stream.stream.cancelled and tts.pool.in_use == 0


def test_astream_reraises_errors(tts, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("decode failed")

    monkeypatch.setattr(tts.engine.start(), "step", boom)  # the scheduler's batched forward

    async def run():
        return [c async for c in tts.astream("مرحبا بكم في نطق", params=P, seed=0)]

    with pytest.raises(RuntimeError, match="decode failed"):
        asyncio.run(run())
    assert tts.pool.in_use == 0


def test_voices_by_id_and_voice_files(tts, tmp_path):
    from nutq.engine.voice_format import load_voice, save_voice

    assert tts.voices.get("default") is not None
    sr = 16000
    t = np.arange(int(2.0 * sr)) / sr
    clip = 0.3 * np.sin(2 * np.pi * 150 * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, clip, sr, format="WAV")
    vid = tts.voices.add(buf.getvalue(), "guest", exaggeration=0.7)
    voice = tts.voices.get(vid)
    assert not voice.speaker_emb.requires_grad and voice.exaggeration == 0.7
    path = tmp_path / "guest.safetensors"
    save_voice(voice, path, meta=None)
    from_file = tts.prepare_voice(path, exaggeration=0.7)
    assert torch_equal(from_file.gen.prompt_feat, voice.gen.prompt_feat)
    # a stream keeps the voice's own exaggeration unless told otherwise
    a = np.concatenate([c.audio for c in tts.stream("مرحبا", voice, params=P, seed=3)])
    b = np.concatenate([c.audio for c in tts.stream("مرحبا", str(path), params=P, seed=3, exaggeration=0.7)])
    assert np.array_equal(a, b)
    assert load_voice(path).exaggeration == 0.7


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def test_bf16_t3_and_flow_stream(tts):
    bf = TTS(tts.files, dtype="bf16", flow_dtype="bf16")
    chunks = list(bf.stream("مرحبا بكم", params=SamplingParams(max_new_tokens=20, ignore_eos=True), seed=0, guard=None))
    audio = np.concatenate([c.audio for c in chunks])
    assert audio.dtype == np.float32 and np.isfinite(audio).all()
    assert 0 < len(audio) <= 20 * 960 and len(audio) % 960 == 0
