"""Kaldi-compatible log mel filterbank features, in torch (the CAMPPlus x-vector front end).

Equal to `torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80)` with its defaults, which is
what the official CAMPPlus feeds on; nutq does not depend on torchaudio, so the recipe lives here:

- frames of 25 ms every 10 ms, only frames that fit entirely ("snip edges"): 1 + (N - 400) // 160;
- per frame: subtract the frame mean (DC), pre-emphasis x[j] - 0.97·x[j-1] with x[-1] := x[0],
  Povey window (symmetric Hann to the power 0.85), zero-pad to 512, power spectrum;
- 80 triangular filters on Kaldi's mel scale 1127·ln(1 + f/700) (not Slaney's) between 20 Hz and
  Nyquist, built over the 256 FFT bins below Nyquist (the Nyquist bin gets weight 0);
- natural log of max(energy, float32 eps). No dither, no energy column, no mean subtraction.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["FBANK_SAMPLE_RATE", "fbank", "fbank_num_frames", "kaldi_mel_banks"]

FBANK_SAMPLE_RATE = 16_000
_FRAME_LENGTH = 400  # 25 ms at 16 kHz
_FRAME_SHIFT = 160  # 10 ms at 16 kHz
_N_FFT = 512  # frame length rounded up to a power of two
_PREEMPHASIS = 0.97
_LOW_FREQ = 20.0
_FLOAT32_EPS = torch.finfo(torch.float32).eps  # Kaldi's floor before the log, whatever the dtype


def _kaldi_mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * (1.0 + freq / 700.0).log()


def kaldi_mel_banks(num_mel_bins: int = 80, n_fft: int = _N_FFT, sample_rate: int = FBANK_SAMPLE_RATE,
                    low_freq: float = _LOW_FREQ, high_freq: float = 0.0) -> torch.Tensor:
    """(num_mel_bins, n_fft // 2 + 1) float32 triangles, equally spaced on the Kaldi mel scale.

    Kaldi/torchaudio evaluate the triangles at the n_fft // 2 bins below Nyquist and append a zero
    column for the Nyquist bin, which is reproduced here. `high_freq <= 0` is an offset from
    Nyquist (Kaldi's convention). The arithmetic is deliberately float32, in torchaudio's order
    (band edges = low + k·delta, slopes from those edges): a float64 bank differs by up to 1e-3
    relative in the small tail weights, which moves quiet log-energies by ~2e-4, whereas this one
    reproduces the official features bit for bit.
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < high_freq <= nyquist):
        raise ValueError(f"need 0 <= low_freq < high_freq <= Nyquist, got {low_freq}, {high_freq}")
    mel_low = 1127.0 * math.log(1.0 + low_freq / 700.0)
    mel_high = 1127.0 * math.log(1.0 + high_freq / 700.0)
    delta = (mel_high - mel_low) / (num_mel_bins + 1)  # the triangles overlap by half
    edges = mel_low + torch.arange(num_mel_bins + 2, dtype=torch.float32) * delta  # (M + 2,)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1) each
    bin_mel = _kaldi_mel((sample_rate / n_fft) * torch.arange(n_fft // 2, dtype=torch.float32))[None]
    up = (bin_mel - left) / (center - left)
    down = (right - bin_mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)  # (M, n_fft // 2)
    return F.pad(banks, (0, 1))


def fbank_num_frames(num_samples: int) -> int:
    """Frames Kaldi keeps for `num_samples` (snip edges): 0 when shorter than one 25 ms frame."""
    return 0 if num_samples < _FRAME_LENGTH else 1 + (num_samples - _FRAME_LENGTH) // _FRAME_SHIFT


def _povey_window(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(_FRAME_LENGTH, periodic=False, device=device, dtype=dtype).pow(0.85)


def fbank(wav16k: torch.Tensor, num_mel_bins: int = 80, mel_banks: torch.Tensor | None = None) -> torch.Tensor:
    """Log mel filterbank of 16 kHz audio: (N,) -> (T, num_mel_bins) or (B, N) -> (B, T, num_mel_bins).

    Rows of a 2-D input are separate utterances of equal length (torchaudio would instead read a
    2-D input as channels and use only the first). `mel_banks` may be passed to skip rebuilding
    `kaldi_mel_banks(num_mel_bins)` on every call. Raises ValueError for audio shorter than one
    25 ms frame (400 samples), where Kaldi produces no frame at all.
    """
    if wav16k.dim() not in (1, 2):
        raise ValueError(f"expected (N,) or (B, N) audio, got shape {tuple(wav16k.shape)}")
    if not wav16k.is_floating_point():
        raise TypeError(f"expected floating-point audio, got {wav16k.dtype}")
    num_samples = wav16k.shape[-1]
    if fbank_num_frames(num_samples) == 0:
        raise ValueError(
            f"audio of {num_samples} samples is shorter than one fbank frame "
            f"({_FRAME_LENGTH} samples = 25 ms at 16 kHz)"
        )
    frames = wav16k.unfold(-1, _FRAME_LENGTH, _FRAME_SHIFT)  # (..., T, 400)
    frames = frames - frames.mean(dim=-1, keepdim=True)
    # pre-emphasis within each frame; the first sample is paired with itself (replicate padding)
    previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
    frames = frames - _PREEMPHASIS * previous
    frames = frames * _povey_window(frames.device, frames.dtype)
    frames = F.pad(frames, (0, _N_FFT - _FRAME_LENGTH))  # (..., T, 512)
    power = torch.fft.rfft(frames).abs().pow(2.0)  # (..., T, 257)
    if mel_banks is None:
        mel_banks = kaldi_mel_banks(num_mel_bins)
    energies = power @ mel_banks.to(device=power.device, dtype=power.dtype).T  # (..., T, M)
    return torch.clamp(energies, min=_FLOAT32_EPS).log()
