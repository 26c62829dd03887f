"""S3Gen's 24 kHz log-mel equals the official `utils.mel.mel_spectrogram`.

Fixture: tests/golden/audio_frontends.safetensors (tools/parity/audio_frontends.py), two rows of
tones + noise, 12,345 samples. Tolerance 1e-5 max abs on the log-mel: the only difference is the
filterbank (ours in numpy float64 -> float32, librosa's the same way; they agree to ~4e-9), which
shows up as ~2e-7 after the log.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import load_golden
from nutq.audio.mel24k import HOP, N_MELS, MelSpectrogram24k, mel_basis_24k, mel_spectrogram_24k

TOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    return load_golden("audio_frontends")


def test_matches_official(golden):
    t, _ = golden
    wav, ref = t["in.wav24000"], t["out.mel24"]
    for got in (mel_spectrogram_24k(wav), MelSpectrogram24k()(wav)):
        assert got.shape == ref.shape == (2, N_MELS, wav.shape[-1] // HOP)
        err = (got - ref).abs().max().item()
        assert err <= TOL, f"24 kHz mel differs from the official by {err:.3g} (> {TOL})"


def test_accepts_1d_and_numpy(golden):
    wav = golden[0]["in.wav24000"][0]
    ref = mel_spectrogram_24k(wav[None])
    assert torch.equal(mel_spectrogram_24k(wav), ref)
    assert torch.equal(mel_spectrogram_24k(wav.numpy().astype(np.float64)), ref)


@pytest.mark.parametrize("n", [721, 959, 960, 1439, 24000])
def test_frame_count_is_length_over_hop(n):
    """Two frames per 40 ms speech token: L samples give L // 480 frames."""
    assert mel_spectrogram_24k(torch.zeros(n)).shape == (1, N_MELS, n // HOP)


def test_too_short_fails_clearly():
    with pytest.raises(ValueError, match="more than 720 samples"):
        mel_spectrogram_24k(torch.zeros(720))
    with pytest.raises(ValueError, match=r"\(L,\) or \(B, L\)"):
        mel_spectrogram_24k(torch.zeros(1, 1, 2000))


def test_tone_lands_in_its_mel_band_and_silence_on_the_floor():
    t = torch.arange(24000) / 24000
    mel = mel_spectrogram_24k(0.5 * torch.sin(2 * math.pi * 1000 * t))[0]  # (80, 50)
    basis = mel_basis_24k()
    bin_1k = round(1000 * 1920 / 24000)  # FFT bin of 1 kHz
    assert mel[:, 25].argmax() == basis[:, bin_1k].argmax()
    # Silence: sqrt(1e-9) magnitude floor, summed by the filter -> far below speech, above the clamp.
    quiet = mel_spectrogram_24k(torch.zeros(4800))
    assert quiet.max() < -9 and quiet.min() >= math.log(1e-5)
