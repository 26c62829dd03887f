"""Streaming token2wav (nutq.engine.token2wav) on a tiny random S3Gen: parity with offline synthesis,
seams, lengths, the chunk schedule and misuse.

Random weights make the audio noise-like, so seams are judged against the offline render of the
same tokens with the same noise, at the same positions, and not by the waveform's smoothness.
"""

from __future__ import annotations

import pytest
import torch

from nutq.audio.fade import apply_trim_fade
from nutq.engine.token2wav import (
    SAMPLES_PER_TOKEN,
    ChunkSchedule,
    SeamConfig,
    SessionSource,
    StreamingToWav,
    Token2WavError,
)
from nutq.models.random_init import randomize_module
from nutq.models.registry import build, build_meanflow, configs_for_size
from nutq.models.s3gen.model import RefDict
from nutq.models.s3gen.source import draw_source_randomness

FRAME = 480
PROMPT_TOKENS = 25  # a 1 s voice prompt keeps every flow call fast


@pytest.fixture(scope="module", params=["cfm", "meanflow"])
def s3gen(request):
    """Both decoders: streaming must hold for the 10-step CFG flow and the distilled 2-step one."""
    torch.manual_seed(0)
    cfg = configs_for_size("tiny")["s3gen"]
    model = build_meanflow(cfg) if request.param == "meanflow" else build("s3gen", cfg)
    return randomize_module(model, 2, keep_suffixes=("_mel_filters", "window")).eval()


@pytest.fixture(scope="module")
def ref():
    g = torch.Generator().manual_seed(0)
    tp = PROMPT_TOKENS
    return RefDict(torch.randint(0, 6561, (1, tp), generator=g), torch.tensor([tp]),
                   -5.0 + 2.0 * torch.randn(1, 2 * tp, 80, generator=g), torch.randn(1, 192, generator=g))


def random_tokens(n: int, seed: int = 1) -> list[int]:
    return torch.randint(0, 6561, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def session(s3gen, ref, schedule=ChunkSchedule(), max_tokens=100, **kw) -> StreamingToWav:
    return StreamingToWav(s3gen, ref, schedule, generator=torch.Generator().manual_seed(5), max_tokens=max_tokens, **kw)


def stream_all(st: StreamingToWav, tokens: list[int], step: int = 1) -> list[torch.Tensor]:
    chunks = []
    for i in range(0, len(tokens), step):
        a = st.push(tokens[i: i + step])
        if a is not None:
            chunks.append(a)
    chunks.append(st.flush())
    return chunks


@torch.inference_mode()
def offline(s3gen, ref, tokens, st: StreamingToWav) -> tuple[torch.Tensor, torch.Tensor]:
    """`S3Gen.inference` of all tokens, with the stream's flow noise and source randomness."""
    mel = s3gen.flow_mel(torch.tensor([tokens]), ref, noise=st.flow_noise)
    hift = s3gen.mel2wav
    src = hift.source(hift.f0(mel), phase=st.source.phase, noise=st.source.noise(0, mel.shape[2] * FRAME))
    return apply_trim_fade(hift.decode(mel, src))[0], mel


def hold_flow_fixed(monkeypatch, s3gen, mel):
    """Make every flow call return a prefix of the final mel: a flow whose past frames never change,
    so that what remains between stream and offline is the vocoder's chunking alone."""
    lookahead = s3gen.cfg.flow.lookahead_frames

    def fixed(tokens, ref, *, finalize=True, **_):
        return mel[:, :, : 2 * tokens.shape[1] - (0 if finalize else lookahead)]

    monkeypatch.setattr(s3gen, "flow_mel", fixed)


def seam_starts(chunks) -> list[int]:
    """Sample index where each chunk after the first begins."""
    ends = torch.tensor([c.numel() for c in chunks]).cumsum(0).tolist()
    return [e for e in ends[:-1] if e > 0]


def window(x, c, half):
    return x[max(c - half, 0): c + half]


# ---------------------------------------------------------------- parity with offline synthesis


def test_offline_helper_is_s3gen_inference(s3gen, ref):
    """The reference used below is S3Gen.inference itself when given the same random draws."""
    tokens = random_tokens(9)
    flow_noise = torch.randn(1, 80, 2 * (PROMPT_TOKENS + 9), generator=torch.Generator().manual_seed(3))
    wav, _ = s3gen.inference(torch.tensor([tokens]), ref, noise=flow_noise, generator=torch.Generator().manual_seed(4))
    mel = s3gen.flow_mel(torch.tensor([tokens]), ref, noise=flow_noise)
    phase, noise = draw_source_randomness(1, 9, 18 * FRAME, torch.Generator().manual_seed(4))
    hift = s3gen.mel2wav
    with torch.inference_mode():
        mine = apply_trim_fade(hift.decode(mel, hift.source(hift.f0(mel), phase=phase, noise=noise)))
    assert torch.equal(wav, mine)


def test_one_chunk_is_exactly_the_offline_synthesis(s3gen, ref):
    tokens = random_tokens(23)
    st = session(s3gen, ref, ChunkSchedule(first=1000, max_size=1000))
    assert all(st.push([t]) is None for t in tokens)
    wav = st.flush()
    expected, _ = offline(s3gen, ref, tokens, st)
    assert wav.dtype == torch.float32 and wav.device.type == "cpu" and wav.shape == (23 * SAMPLES_PER_TOKEN,)
    # Same operations on the same tensors: bit-identical.
    assert torch.equal(wav, expected)


def test_streamed_vs_offline_deviation_comes_from_the_flow_not_the_seams(s3gen, ref, monkeypatch):
    """Measured (60 tokens, default schedule and seams): max |stream - offline| = 1.44 on audio of
    std 0.32 with the real flow; the flow re-encodes a growing prefix with bidirectional attention,
    so released frames' log-mel differs from the final mel. With the flow held fixed the stream
    equals the offline audio except within the 12 frames (HiFT's receptive field) before each
    render's end, i.e. the last 4 released and the 8 cross-faded frames of a seam (max 0.39)."""
    tokens = random_tokens(60)
    st = session(s3gen, ref)
    mels = []
    real_flow = s3gen.flow_mel
    monkeypatch.setattr(s3gen, "flow_mel", lambda *a, **k: mels.append(real_flow(*a, **k)) or mels[-1])
    streamed = torch.cat(stream_all(st, tokens))
    monkeypatch.undo()
    expected, final_mel = offline(s3gen, ref, tokens, st)
    assert (streamed - expected).abs().max() > 0.1  # the real flow changes frames as context grows
    first_chunk_mel = mels[0][:, :, : st.timings[0].samples // FRAME]
    assert (first_chunk_mel - final_mel[:, :, : first_chunk_mel.shape[2]]).abs().max() > 0.1
    assert torch.equal(mels[-1], final_mel)  # EOS: the full utterance, finalized

    st = session(s3gen, ref)
    hold_flow_fixed(monkeypatch, s3gen, final_mel)
    streamed = torch.cat(stream_all(st, tokens))
    per_frame = (streamed - expected).abs().reshape(-1, FRAME).amax(1)
    edge_zone = torch.zeros_like(per_frame, dtype=torch.bool)
    start = 0
    for t in st.timings[:-1]:
        end = start + t.samples // FRAME
        mel_end = end + st.seams.holdback_frames
        edge_zone[mel_end - 12: mel_end] = True
        start = end
    assert per_frame[~edge_zone].max() < 1e-3, "outside seams the stream must be the offline audio"
    assert per_frame[edge_zone].max() < 1.0


# ---------------------------------------------------------------- seams


def naive_concatenation(s3gen, st, mel, starts) -> torch.Tensor:
    """The same chunks vocoded separately (no context, no cross-fade) and joined end to end."""
    hift = s3gen.mel2wav
    with torch.inference_mode():
        src = hift.source(hift.f0(mel), phase=st.source.phase, noise=st.source.noise(0, mel.shape[2] * FRAME))
        cuts = [0] + [s // FRAME for s in starts] + [mel.shape[2]]
        parts = [hift.decode(mel[:, :, a:b], src[:, :, a * FRAME: b * FRAME])[0] for a, b in zip(cuts, cuts[1:])]
    return apply_trim_fade(torch.cat(parts))


def rel_error_at(x, ref, centers, half=FRAME):
    return torch.tensor([(window(x, c, half) - window(ref, c, half)).norm() / window(ref, c, half).norm()
                         for c in centers])


def energy_db_at(x, ref, centers, half=FRAME // 2):
    return torch.tensor([10 * torch.log10(window(x, c, half).pow(2).mean() / window(ref, c, half).pow(2).mean())
                         for c in centers])


def test_seams_match_offline_where_a_naive_concatenation_breaks(s3gen, ref, monkeypatch):
    """Seam metric: relative error against the offline render in ±1 frame around each seam, with
    the flow held fixed so that only the joining is judged. Measured: 0.07-0.11 for the stream,
    0.85-0.91 for separately vocoded chunks joined end to end."""
    tokens = random_tokens(100, seed=2)
    st = session(s3gen, ref)
    expected, mel = offline(s3gen, ref, tokens, st)
    hold_flow_fixed(monkeypatch, s3gen, mel)
    chunks = stream_all(st, tokens)
    starts = seam_starts(chunks)
    assert len(starts) >= 5
    streamed = torch.cat(chunks)
    naive = naive_concatenation(s3gen, st, mel, starts)
    ours, theirs = rel_error_at(streamed, expected, starts), rel_error_at(naive, expected, starts)
    assert ours.max() < 0.25, f"seam error {ours.tolist()}"
    assert theirs.min() > 0.6, f"naive seam error {theirs.tolist()} (the metric no longer discriminates)"


def test_seams_keep_the_loudness_of_the_offline_render(s3gen, ref):
    """With the real flow: short-time energy at each seam against the offline render at the same
    place. Zero padding at chunk edges makes a naive concatenation dip (-2.2..-4.6 dB here);
    the stream stays within ±2 dB (measured -0.5..+0.9 dB)."""
    tokens = random_tokens(100, seed=3)
    st = session(s3gen, ref)
    chunks = stream_all(st, tokens)
    expected, mel = offline(s3gen, ref, tokens, st)
    starts = seam_starts(chunks)
    ours = energy_db_at(torch.cat(chunks), expected, starts)
    theirs = energy_db_at(naive_concatenation(s3gen, st, mel, starts), expected, starts)
    assert ours.abs().max() < 2.0, f"stream energy at seams {ours.tolist()} dB"
    assert theirs.median() < -2.0, f"naive energy at seams {theirs.tolist()} dB (the metric no longer discriminates)"


TONE_HZ, TONE_AMP = 200.0, 0.5


def tonal_stand_in(monkeypatch, s3gen):
    """Replace flow and HiFT by a tone whose phase differs from render to render, as real renders
    of a growing prefix differ. A switch between two renders is then audible and measurable as a
    jump in the waveform, which noise-like random-weight audio would mask. The fake mel carries
    each frame's absolute index (channel 0) and the render's number (channel 1)."""
    renders = []
    lookahead = s3gen.cfg.flow.lookahead_frames

    def flow_mel(tokens, ref, *, finalize=True, **_):
        n = 2 * tokens.shape[1] - (0 if finalize else lookahead)
        mel = torch.zeros(1, 80, n)
        mel[0, 0] = torch.arange(n)
        mel[0, 1] = len(renders)
        renders.append(n)
        return mel

    def decode(mel, source):
        t = mel[0, 0, :, None] * FRAME + torch.arange(FRAME)  # (T, 480) absolute sample index
        phase = mel[0, 1, :, None]  # one radian further per render
        return (TONE_AMP * torch.sin(2 * torch.pi * TONE_HZ * t / 24000 + phase)).reshape(1, -1)

    monkeypatch.setattr(s3gen, "flow_mel", flow_mel)
    monkeypatch.setattr(s3gen.mel2wav, "decode", decode)


@pytest.mark.parametrize("seams, max_jump", [(SeamConfig(), 1.1), (SeamConfig(crossfade_frames=0), None)])
def test_no_clicks_where_consecutive_renders_disagree(s3gen, ref, monkeypatch, seams, max_jump):
    """Click metric: the largest sample-to-sample step within ±2 frames of any seam, in units of
    the tone's own largest step (amplitude x 2π·f/sr). The cross-fade keeps it at 1.0; without it
    a seam jumps by up to 2A·sin(1/2) = 0.48 (depending on where in the period it falls), here
    18 x the tone's step."""
    tonal_stand_in(monkeypatch, s3gen)
    chunks = stream_all(session(s3gen, ref, seams=seams), random_tokens(60))
    x = torch.cat(chunks)
    step = (x[1:] - x[:-1]).abs() / (TONE_AMP * 2 * torch.pi * TONE_HZ / 24000)
    jumps = torch.tensor([window(step, c, 2 * FRAME).max() for c in seam_starts(chunks)])
    assert len(jumps) == 4
    if max_jump is not None:
        assert jumps.max() < max_jump, f"clicks at seams: steps {jumps.tolist()} x the tone's"
    else:
        assert jumps.max() > 10, f"without a cross-fade the seams should click: {jumps.tolist()}"


def test_trim_fade_only_at_the_start(s3gen, ref):
    chunks = stream_all(session(s3gen, ref), random_tokens(40))
    assert torch.all(chunks[0][:480] == 0) and chunks[0][480:960].abs().max() > 0
    for c in chunks[1:]:
        assert c[:480].abs().max() > 0.05, "a later chunk starts silent: the trim fade was applied again"


def test_source_stays_continuous_across_renders(s3gen):
    """Voiced F0 (the tiny model's own F0 is all unvoiced): the source built render by render, as
    a stream commits it, equals the one-shot offline source. Tolerance: the offline phase is a
    float32 cumulative sum over the whole utterance (rounding ~1e-4 rad here)."""
    hift = s3gen.mel2wav
    frames = 60
    f0 = 150 + 60 * torch.sin(torch.linspace(0, 6, frames))[None]  # (1, 60) Hz
    f0[:, 20:26] = 0  # an unvoiced stretch
    src = SessionSource(hift, torch.Generator().manual_seed(7), torch.device("cpu"))
    with torch.inference_mode():
        expected = hift.source(f0, phase=src.phase, noise=src.noise(0, frames * FRAME))
        # (render start, commit up to, keep from) as a stream with 8 context frames would go
        pieces, start = [], 0
        for mel_end, release_end in ((14, 6), (26, 18), (50, 42)):
            s = src.render(f0[:, start:mel_end], start)
            pieces.append((start, s))
            keep_from = max(0, release_end - 8)
            src.commit(s, f0[:, start:mel_end], start, release_end + 8, keep_from)
            start = keep_from
        last = src.render(f0[:, start:], start)
    assert torch.allclose(last, expected[:, :, start * FRAME:], atol=1e-4)
    for s0, s in pieces:
        assert torch.allclose(s, expected[:, :, s0 * FRAME: s0 * FRAME + s.shape[2]], atol=1e-4)


# ---------------------------------------------------------------- length


LENGTH_CASES = (
    [(n, ChunkSchedule(), 1) for n in (1, 3, 4, 10, 11, 31)]  # around the first chunk (token 10)
    + [(n, ChunkSchedule(first=1, growth=1.0, max_size=1), 1) for n in (8, 12)]  # a render per token
    + [(n, ChunkSchedule(first=2, growth=1.5, max_size=5), 4) for n in (9, 31)]  # pushes of 4
    + [(31, ChunkSchedule(), 31)]  # everything in one push
)


@pytest.mark.parametrize("n_tokens, schedule, step", LENGTH_CASES)
def test_exactly_960_samples_per_token(s3gen, ref, n_tokens, schedule, step):
    st = session(s3gen, ref, schedule, max_tokens=40)
    chunks = stream_all(st, random_tokens(n_tokens), step)
    assert sum(c.numel() for c in chunks) == st.samples_emitted == n_tokens * SAMPLES_PER_TOKEN
    assert all(c.numel() % SAMPLES_PER_TOKEN == 0 for c in chunks), "chunks carry whole tokens"
    assert all(c.dtype == torch.float32 and c.dim() == 1 for c in chunks)
    assert sum(t.samples for t in st.timings) == n_tokens * SAMPLES_PER_TOKEN


# ---------------------------------------------------------------- schedule


def take(it, n):
    return [x for _, x in zip(range(n), it)]


def test_schedule_grows_to_its_cap():
    assert take(ChunkSchedule().sizes(), 6) == [3, 6, 12, 24, 24, 24]
    assert take(ChunkSchedule().boundaries(), 5) == [3, 9, 21, 45, 69]
    assert take(ChunkSchedule(first=2, growth=1.5, max_size=10).sizes(), 7) == [2, 3, 5, 8, 10, 10, 10]
    assert take(ChunkSchedule(first=4, growth=1.0, max_size=4).sizes(), 3) == [4, 4, 4]


@pytest.mark.parametrize("kwargs", [dict(first=0), dict(first=2.5), dict(first=5, max_size=4),
                                    dict(growth=0.5), dict(growth=float("nan"))])
def test_schedule_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="ChunkSchedule"):
        ChunkSchedule(**kwargs)


@pytest.mark.parametrize("kwargs", [dict(context_frames=-1), dict(holdback_frames=2, crossfade_frames=4)])
def test_seam_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="SeamConfig"):
        SeamConfig(**kwargs)


def test_chunks_come_when_their_audio_can_be_released(s3gen, ref):
    """Default: chunks of 3, 6, 12, 24 tokens of audio; each needs 7 more tokens received (3 of
    flow look-ahead, 4 = 8 held-back frames), so the first arrives with token 10."""
    st = session(s3gen, ref)
    got = []
    for i, t in enumerate(random_tokens(60), start=1):
        due = st.next_due
        a = st.push([t])
        assert (a is not None) == (i == due)
        if a is not None:
            got.append((i, a.numel() // SAMPLES_PER_TOKEN))
    assert got == [(10, 3), (16, 6), (28, 12), (52, 24)]
    assert st.flush().numel() == (60 - 45) * SAMPLES_PER_TOKEN


def test_a_large_push_releases_everything_ready_and_skips_covered_boundaries(s3gen, ref):
    st = session(s3gen, ref)
    a = st.push(random_tokens(30))
    assert a.numel() == (30 - 7) * SAMPLES_PER_TOKEN
    assert st.next_due == 45 + 7  # boundaries 3, 9, 21 are behind; 45 is next


def test_timings_are_recorded_per_render(s3gen, ref):
    st = session(s3gen, ref)
    chunks = stream_all(st, random_tokens(30))
    assert len(st.timings) == len(chunks) and st.last_timing is st.timings[-1]
    assert [t.finalize for t in st.timings] == [False] * (len(chunks) - 1) + [True]
    assert all(t.flow_ms > 0 and t.hift_ms > 0 for t in st.timings)
    assert st.timings[-1].mel_frames == 60 and st.timings[0].hift_frames == st.timings[0].mel_frames


# ---------------------------------------------------------------- misuse


def test_bad_ids_are_a_clear_error(s3gen, ref):
    st = session(s3gen, ref)
    with pytest.raises(Token2WavError, match="6561 at position 1 .* outside"):
        st.push([5, 6561])
    with pytest.raises(Token2WavError, match="-1"):
        st.push([-1])
    with pytest.raises(Token2WavError, match="integers"):
        st.push(torch.tensor([1.0]))
    assert st.tokens_received == 0  # a rejected push adds nothing


def test_too_many_tokens_is_a_clear_error(s3gen, ref):
    st = session(s3gen, ref, max_tokens=5)
    st.push([1, 2, 3])
    with pytest.raises(Token2WavError, match="max_tokens=5"):
        st.push([4, 5, 6])


def test_flush_ends_the_session(s3gen, ref):
    st = session(s3gen, ref)
    empty = st.flush()
    assert empty.numel() == 0 and empty.dtype == torch.float32
    with pytest.raises(Token2WavError, match="flushed"):
        st.push([1])
    with pytest.raises(Token2WavError, match="flushed"):
        st.flush()
