"""nutq.audio.fbank equals torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80), the CAMPPlus front end.

Fixture: tests/golden/campplus.safetensors (tools/parity/campplus.py records torchaudio's fbank of
a synthetic voice and of white noise at edge-case lengths). Tolerance 1e-4 max abs on log energies
(the project's parity bound for features); the float32 Kaldi mel bank makes the result bit-identical in practice (0.0).
"""

from __future__ import annotations

import pytest
import torch

from conftest import load_golden
from nutq.audio.fbank import fbank, fbank_num_frames, kaldi_mel_banks

TOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    return load_golden("campplus")


def test_fbank_matches_torchaudio_on_speech(golden):
    g, _ = golden
    ours = fbank(g["in.wav"])
    assert ours.shape == g["out.fbank"].shape == (fbank_num_frames(g["in.wav"].numel()), 80)
    assert (ours - g["out.fbank"]).abs().max() <= TOL


def test_fbank_matches_torchaudio_on_noise_at_edge_lengths(golden):
    g, meta = golden
    for k, n in enumerate(meta["noise_lengths"]):
        wav, ref = g[f"in.noise{k}"], g[f"out.fbank_noise{k}"]
        assert wav.numel() == n
        ours = fbank(wav)
        assert ours.shape == ref.shape, f"{n} samples: {tuple(ours.shape)} vs torchaudio {tuple(ref.shape)}"
        assert (ours - ref).abs().max() <= TOL, f"{n} samples"


def test_batch_rows_are_independent_utterances(golden):
    g, _ = golden
    wav = g["in.wav"][:20_000]
    other = torch.flip(wav, [0]) * 0.3
    batch = fbank(torch.stack([wav, other]))
    assert batch.shape == (2, fbank_num_frames(20_000), 80)
    assert torch.equal(batch[0], fbank(wav)) and torch.equal(batch[1], fbank(other))


def test_mel_bank_is_kaldi_not_slaney():
    banks = kaldi_mel_banks(80)
    assert banks.shape == (80, 257)
    assert torch.all(banks[:, -1] == 0), "the Nyquist bin carries no weight in Kaldi's bank"
    # Kaldi triangles are unnormalised (peak 1, lower where a narrow low band falls between FFT bins);
    # Slaney's are area-normalised (peaks below 0.05 here)
    peaks = banks.max(dim=1).values
    assert peaks.min() > 0.3 and peaks.max() <= 1.0 and peaks.median() > 0.9
    # filter centres equally spaced on 1127·ln(1 + f/700) between 20 Hz and 8 kHz
    centres_hz = banks.argmax(dim=1).float() * (16_000 / 512)
    mel = 1127.0 * torch.log1p(centres_hz / 700.0)
    step = (1127.0 * torch.log1p(torch.tensor(8000.0 / 700.0)) - 1127.0 * torch.log1p(torch.tensor(20.0 / 700.0))) / 81
    assert (mel[40:] - mel[39:-1] - step).abs().max() < 0.5 * step  # bin quantisation only


def test_audio_shorter_than_one_frame_is_a_clear_error():
    assert fbank(torch.zeros(400)).shape == (1, 80)  # exactly one 25 ms frame
    with pytest.raises(ValueError, match="shorter than one fbank frame"):
        fbank(torch.zeros(399))
    with pytest.raises(ValueError, match=r"\(N,\) or \(B, N\)"):
        fbank(torch.zeros(1, 1, 1000))
