"""S3Gen's 24 kHz log-mel front end (the `prompt_feat` of a voice, and what the flow predicts).

Matcha/CosyVoice convention: 80 slaney mels from 0 to 8 kHz over a 1920-point STFT (80 ms
periodic Hann window) with hop 480 (20 ms, 50 frames/s = 2 frames per speech token). Instead of a
centered STFT the signal is reflect-padded by (n_fft - hop) / 2 = 720 samples on each side and
framed with `center=False`, so L samples give L // 480 frames (for L > 720). Magnitude (not power)
with a 1e-9 floor inside the square root; natural log after clamping at 1e-5.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..rates import SAMPLE_RATE

from .melbank import mel_filterbank

__all__ = ["SAMPLE_RATE", "N_FFT", "HOP", "N_MELS", "FMIN", "FMAX", "mel_basis_24k", "mel_spectrogram_24k",
           "MelSpectrogram24k"]

N_FFT = 1920
HOP = 480
N_MELS = 80
FMIN = 0.0
FMAX = 8000.0
_PAD = (N_FFT - HOP) // 2  # 720


def mel_basis_24k(device: torch.device | str | None = None) -> torch.Tensor:
    """(80, 961) float32 slaney filterbank."""
    return torch.from_numpy(mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS, FMIN, FMAX)).to(device)


def _as_batch(wav: torch.Tensor | np.ndarray) -> torch.Tensor:
    if isinstance(wav, np.ndarray):
        wav = torch.from_numpy(np.ascontiguousarray(wav))
    if wav.dim() == 1:
        wav = wav[None]
    if wav.dim() != 2:
        raise ValueError(f"expected a waveform shaped (L,) or (B, L), got {tuple(wav.shape)}")
    if wav.shape[-1] <= _PAD:
        raise ValueError(f"24 kHz mel needs more than {_PAD} samples (30 ms), got {wav.shape[-1]}")
    return wav.float()


def mel_spectrogram_24k(wav: torch.Tensor | np.ndarray, mel_basis: torch.Tensor | None = None,
                        window: torch.Tensor | None = None) -> torch.Tensor:
    """(L,) or (B, L) 24 kHz audio in [-1, 1] -> (B, 80, L // 480) float32 log-mel.

    `mel_basis`/`window` may be passed pre-built (see `MelSpectrogram24k`) to skip rebuilding them.
    """
    y = _as_batch(wav)
    if mel_basis is None:
        mel_basis = mel_basis_24k(y.device)
    if window is None:
        # float32 periodic Hann from torch (the official uses torch.hann_window, not scipy).
        window = torch.hann_window(N_FFT, device=y.device)
    y = F.pad(y[:, None], (_PAD, _PAD), mode="reflect")[:, 0]  # (B, L + 1440)
    spec = torch.stft(y, N_FFT, HOP, N_FFT, window=window, center=False, normalized=False,
                      onesided=True, return_complex=True)  # (B, 961, frames)
    mag = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
    return torch.log(torch.clamp(torch.matmul(mel_basis, mag), min=1e-5))


class MelSpectrogram24k(nn.Module):
    """`mel_spectrogram_24k` with its filterbank and window held as (non-persistent) buffers."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mel_basis", mel_basis_24k(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def init_buffers(self, device: torch.device) -> None:
        """Rebuild the constants after a meta-device build (they are not stored in any file)."""
        self.mel_basis = mel_basis_24k().to(device)
        self.window = torch.hann_window(N_FFT, device=device)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return mel_spectrogram_24k(wav.to(self.window.device), self.mel_basis, self.window)
