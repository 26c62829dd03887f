"""S3Tokenizer equals the official chatterbox-tts 0.1.7 S3 tokenizer (random weights, fp32).

Fixture: tests/golden/s3tokenizer.safetensors from tools/parity/s3tokenizer.py (two synthetic
utterances of 1.9 s and 2.7 s tokenized as one batch, and one with max_len=50).
Tolerances and why:
- tokens: identical (a token off changes the speech the flow renders). FSQ rounds tanh(·)·0.999 at ±0.5; the fixture
  records the official pre-rounding values so a failure can be told apart from a tie (the
  closest value in the fixture is 8e-4 from a boundary, far above fp32 noise).
- DSP buffers: our Slaney bank vs librosa's 1e-7 (observed 4e-9); window exact.
- log-mel: 1e-5 max abs (observed 1.2e-7, from the filterbank's last bits).
- encoder output from the official mels: 1e-4 max abs (observed 0.0; same fp32 ops in the same order).
"""

from __future__ import annotations

import pytest
import torch

from conftest import load_golden, run_generator
from nutq.audio.s3_mel import s3_log_mel
from nutq.models.random_init import randomize_module
from nutq.models.s3gen.s3tokenizer import S3_TOKENIZER_FULL, S3_TOKENIZER_TINY, S3Tokenizer

DSP = ("_mel_filters", "window")


def build(cfg, seed: int) -> S3Tokenizer:
    return randomize_module(S3Tokenizer(cfg), seed, keep_suffixes=DSP).eval()


def padded_mels(mels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([m.shape[-1] for m in mels])
    batch = torch.zeros(len(mels), mels[0].shape[0], int(lens.max()))
    for i, m in enumerate(mels):
        batch[i, :, : m.shape[-1]] = m
    return batch, lens


def check(model: S3Tokenizer, g: dict, max_len: int) -> None:
    assert (model._mel_filters - g["out.mel_filters"]).abs().max() <= 1e-7
    assert torch.equal(model.window, g["out.window"])
    wavs = [g["in.wav0"], g["in.wav1"]]
    for i, wav in enumerate(wavs):
        mel = model.log_mel(wav)
        assert mel.shape == g[f"out.mel{i}"].shape == (128, wav.numel() // 160)
        assert (mel - g[f"out.mel{i}"]).abs().max() <= 1e-5

    with torch.inference_mode():
        hidden, _ = model.encoder(*padded_mels([g["out.mel0"], g["out.mel1"]]))
    assert (hidden - g["out.hidden"]).abs().max() <= 1e-4

    tokens, lens = model.tokenize(wavs)
    assert tokens.dtype == lens.dtype == torch.int64
    assert torch.equal(lens, g["out.token_lens"])
    assert lens.tolist() == [model.num_tokens(w.numel()) for w in wavs]
    mismatch = (tokens != g["out.tokens"]).nonzero().tolist()
    assert not mismatch, (
        f"tokens differ at (row, t) {mismatch[:8]}; official tanh·0.999 there: "
        f"{[g['out.fsq'][r, t].tolist() for r, t in mismatch[:2]]} (a value near ±0.5 means a rounding tie)"
    )
    # random weights must still spread over many codes, or token equality would prove little
    assert tokens.unique().numel() > 20

    tokens, lens = model.tokenize([wavs[1]], max_len=max_len)
    assert tokens.shape == (1, max_len) and lens.tolist() == [max_len]
    assert torch.equal(tokens, g["out.tokens_maxlen"])


@pytest.fixture(scope="module")
def tiny():
    g, meta = load_golden("s3tokenizer")
    assert meta["size"] == "tiny"
    return build(S3_TOKENIZER_TINY, meta["seed"]), g, meta


def test_s3tokenizer_tiny_matches_official(tiny):
    model, g, meta = tiny
    check(model, g, meta["max_len"])


def test_full_statedict_matches_official_listing(statedict_listing):
    with torch.device("meta"):
        model = S3Tokenizer(S3_TOKENIZER_FULL)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == statedict_listing("s3gen_s3tokenizer.txt", "tokenizer.")


def test_forward_entry_points_agree(tiny):
    """forward(mels, frames), forward(padded wavs, samples) and tokenize(list) are one computation."""
    model, g, _ = tiny
    wav0, wav1 = g["in.wav0"], g["in.wav1"]
    expected, expected_lens = model.tokenize([wav0, wav1])
    with torch.inference_mode():
        from_mels = model(*padded_mels([model.log_mel(wav0), model.log_mel(wav1)]))
        wavs = torch.zeros(2, wav1.numel())
        wavs[0, : wav0.numel()], wavs[1] = wav0, wav1
        from_wavs = model(wavs, torch.tensor([wav0.numel(), wav1.numel()]))
    for tokens, lens in (from_mels, from_wavs):
        assert torch.equal(tokens, expected) and torch.equal(lens, expected_lens)
    # batching does not change an utterance's tokens within its length
    alone, n = model.tokenize(wav0)
    assert torch.equal(alone[0], expected[0, : int(n)])


def test_log_mel_floor_is_per_utterance(tiny):
    """The official wrapper normalises each waveform by its own peak, never by the batch's."""
    model, g, _ = tiny
    silence = torch.zeros(4_000)  # digital silence: log10 hits 1e-10, so the floor certainly binds
    loud = torch.cat([g["in.wav0"][:12_000], silence])
    # 20 dB below: its own floor (peak - 8 decades) stays above the 1e-10 clamp, the loud row's would not
    quiet = 0.1 * torch.cat([g["in.wav1"][:12_000], silence])
    batch = s3_log_mel(torch.stack([loud, quiet]), model._mel_filters, model.window)
    assert torch.allclose(batch[0], model.log_mel(loud), atol=1e-6)
    assert torch.allclose(batch[1], model.log_mel(quiet), atol=1e-6)
    # each row spans exactly 8 decades below its own peak: (8) / 4 = 2 after normalisation
    for row in batch:
        assert abs(float(row.max() - row.min()) - 2.0) < 1e-5


def test_short_and_long_audio_are_clear_errors(tiny):
    model, _, _ = tiny
    assert model.tokenize(torch.randn(201))[0].shape == (1, 1)  # one mel frame is enough
    with pytest.raises(ValueError, match="too short"):
        model.tokenize(torch.randn(200))
    with pytest.raises(ValueError, match="30 s"):
        model(torch.zeros(1, 128, 3001), torch.tensor([3001]))


def test_runs_in_bfloat16(tiny):
    model, g, _ = tiny
    half = build(S3_TOKENIZER_TINY, 1234).to(torch.bfloat16)
    tokens, lens = half.tokenize([g["in.wav0"], g["in.wav1"]])
    ref = g["out.tokens"]
    # bf16 keeps 8 bits of mantissa; most, not all, FSQ digits survive
    agree = torch.cat([(tokens[i, :n] == ref[i, :n]) for i, n in enumerate(lens.tolist())]).float().mean()
    assert agree > 0.8, f"only {agree:.0%} of bf16 tokens equal the fp32 official ones"


@pytest.mark.slow
@pytest.mark.refenv
def test_s3tokenizer_full_matches_official_live(tmp_path):
    out = tmp_path / "s3tokenizer.safetensors"
    g, meta = run_generator("s3tokenizer.py", out, "--size", "full")
    check(build(S3_TOKENIZER_FULL, meta["seed"]), g, meta["max_len"])
