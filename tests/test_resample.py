"""Resampling equals the official pipeline's two resamplers, and librosa's polyphase one (Perth).

Fixture: tests/golden/audio_frontends.safetensors (tools/parity/audio_frontends.py):
- `resample_sinc` vs torchaudio `transforms.Resample(a, b)` (as S3Gen's `get_resampler`): 1e-5 max
  abs. Same float64 kernel math rounded to float32 and the same conv1d, so today it is exact.
- `resample` vs `librosa.resample(..., res_type="soxr_hq")`: 1e-6 max abs. Same libsoxr call on
  the same data, so exact unless the soxr versions differ.
- `resample_poly` vs `librosa.resample(..., res_type="polyphase")` (scipy's `resample_poly`):
  1e-6 max abs. scipy filters float32 input in float32, nutq in float64 (observed ~2e-7).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import load_golden
from nutq.audio.resample import resample, resample_poly, resample_sinc, sinc_resample_kernel

SINC_TOL = 1e-5
SOXR_TOL = 1e-6
POLY_TOL = 1e-6


@pytest.fixture(scope="module")
def golden():
    return load_golden("audio_frontends")


def test_sinc_matches_torchaudio(golden):
    t, meta = golden
    for a, b in meta["sinc_pairs"]:
        ref = t[f"out.sinc_{a}_{b}"]
        got = resample_sinc(t[f"in.wav{a}"], a, b)
        assert got.shape == ref.shape, f"{a}->{b}: length {got.shape[-1]} != torchaudio {ref.shape[-1]}"
        err = (got - ref).abs().max().item()
        assert err <= SINC_TOL, f"{a}->{b}: differs from torchaudio Resample by {err:.3g}"


def test_soxr_matches_librosa(golden):
    t, meta = golden
    for a, b in meta["soxr_pairs"]:
        ref = t[f"out.soxr_{a}_{b}"].numpy()
        got = resample(t[f"in.wav{a}"].numpy(), a, b)
        assert got.dtype == np.float32 and got.shape == ref.shape, f"{a}->{b}: {got.shape} vs {ref.shape}"
        err = float(np.abs(got - ref).max())
        assert err <= SOXR_TOL, f"{a}->{b}: differs from librosa soxr_hq by {err:.3g}"


def test_polyphase_matches_librosa(golden):
    t, meta = golden
    for a, b in meta["poly_pairs"]:
        ref = t[f"out.poly_{a}_{b}"].numpy()
        got = resample_poly(t[f"in.wav{a}"][0].numpy(), a, b)
        assert got.dtype == np.float32 and got.shape == ref.shape, f"{a}->{b}: {got.shape} vs {ref.shape}"
        err = float(np.abs(got - ref).max())
        assert err <= POLY_TOL, f"{a}->{b}: differs from librosa polyphase by {err:.3g}"


def test_polyphase_lengths_identity_and_bad_input():
    for n in (1, 2, 7, 1001):
        assert resample_poly(np.ones(n, np.float32), 24000, 32000).shape == (math.ceil(n * 4 / 3),)
    x = np.arange(5, dtype=np.float64)
    y = resample_poly(x, 16000, 16000)
    assert np.array_equal(y, x) and y is not x
    with pytest.raises(ValueError, match="1-D float32/float64"):
        resample_poly(np.zeros((2, 10), np.float32), 24000, 32000)
    with pytest.raises(ValueError, match="positive integers"):
        resample_poly(np.zeros(10, np.float32), 24000, 0)


@pytest.mark.parametrize("n", [1, 2, 3, 100, 101, 12_345])
def test_output_length_is_ceil_of_ratio(n):
    for a, b in [(24000, 16000), (16000, 24000), (44100, 16000)]:
        want = math.ceil(n * b / a)
        assert resample_sinc(torch.zeros(n), a, b).shape == (want,)
        assert resample(np.zeros(n, np.float32), a, b).shape == (want,)


def test_batch_dims_tensors_and_identity():
    x = torch.randn(2, 3, 1000, generator=torch.Generator().manual_seed(0))
    y = resample_sinc(x, 24000, 16000)
    assert y.shape == (2, 3, 667)
    # rows are independent (batched conv kernels may round differently in the last bit)
    assert torch.allclose(y[1, 2], resample_sinc(x[1, 2], 24000, 16000), atol=1e-6, rtol=0)
    z = resample(x, 24000, 16000)  # tensor in -> tensor out, rows independent like librosa
    assert isinstance(z, torch.Tensor) and z.shape == (2, 3, 667)
    assert np.array_equal(z[1, 2].numpy(), resample(x[1, 2].numpy(), 24000, 16000))
    assert resample_sinc(x, 16000, 16000) is x and resample(x, 16000, 16000) is x


def test_sinc_passes_dc_and_low_tones():
    """Each polyphase branch has unit DC gain, so a constant stays constant away from the edges."""
    kernel, width = sinc_resample_kernel(24000, 16000)
    assert kernel.shape == (2, 1, 2 * width + 3)
    assert torch.allclose(kernel.sum(-1), torch.ones(2, 1), atol=2e-3)
    y = resample_sinc(torch.full((2400,), 0.5), 24000, 16000)
    assert (y[50:-50] - 0.5).abs().max() < 1e-3


def test_bad_arguments_fail_clearly():
    with pytest.raises(TypeError, match="floating-point"):
        resample_sinc(torch.zeros(10, dtype=torch.int16), 24000, 16000)
    with pytest.raises(ValueError, match="positive integers"):
        resample_sinc(torch.zeros(10), 22050.5, 16000)
    with pytest.raises(TypeError, match="float32 or float64"):
        resample(np.zeros(10, np.int16), 24000, 16000)


def _snr_db(ref: torch.Tensor, y: torch.Tensor) -> float:
    return 10 * math.log10((ref.double() ** 2).sum().item() / ((ref.double() - y.double()) ** 2).sum().item())


def test_soxr_vs_sinc_difference_is_as_documented():
    """Re-measures the table in nutq.audio.resample's docstring (max abs, SNR; 24 kHz -> 16 kHz)."""
    t = torch.arange(24000, dtype=torch.float64) / 24000
    low = 0.3 * torch.sin(2 * math.pi * 440 * t) + 0.2 * torch.sin(2 * math.pi * 3000 * t)
    signals = {  # name: (signal, documented whole max, whole SNR, interior max, interior SNR)
        "low tones": (low, 2.1e-3, 67.3, 1.8e-4, 69.3),
        "+7.5 kHz": (low + 0.2 * torch.sin(2 * math.pi * 7500 * t), 0.060, 16.8, 0.059, 16.8),
        "white": (0.1 * torch.randn(24000, generator=torch.Generator().manual_seed(0), dtype=torch.float64),
                  0.055, 15.6, 0.055, 15.6),
    }
    edge = 800  # 50 ms at 16 kHz
    for name, (x, mx, snr, mx_in, snr_in) in signals.items():
        x = x.float()
        a = torch.from_numpy(resample(x.numpy(), 24000, 16000))
        b = resample_sinc(x, 24000, 16000)
        got = ((a - b).abs().max().item(), _snr_db(a, b),
               (a - b)[edge:-edge].abs().max().item(), _snr_db(a[edge:-edge], b[edge:-edge]))
        assert got[0] == pytest.approx(mx, rel=0.06) and got[2] == pytest.approx(mx_in, rel=0.06), (name, got)
        assert got[1] == pytest.approx(snr, abs=0.1) and got[3] == pytest.approx(snr_in, abs=0.1), (name, got)
