"""The voice encoder's mel front end: 40-band power mel at 16 kHz, no log, librosa conventions.

The official VE computes `mel_basis @ |librosa.stft(wav, n_fft=400, hop_length=160,
win_length=400, center=True, pad_mode="reflect")|**2` (mel_type "amp", power 2, no
pre-emphasis, no normalization, no log), with a periodic Hann window and the slaney mel bank
(fmin 0, fmax 8000). With center=True there are 1 + len // 160 frames (100 frames/s).

Precision follows librosa on a float32 waveform: the window product and FFT run in float64,
the spectrum is stored as complex64, its magnitude and square are float32 and the mel product
is a float32 matmul. Measured against librosa 0.11: max relative error ~1e-7 (float32 rounding
and summation order), well inside the 1e-5 the parity test allows.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from nutq.audio.melbank import mel_filterbank

__all__ = ["VE_SAMPLE_RATE", "VE_N_FFT", "VE_HOP", "VE_N_MELS", "ve_mel"]

VE_SAMPLE_RATE = 16_000
VE_N_FFT = 400  # 25 ms
VE_HOP = 160  # 10 ms -> 100 frames/s
VE_N_MELS = 40
VE_FMIN, VE_FMAX = 0.0, 8000.0


def ve_mel(wav: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, 40) float32 power mel of a 16 kHz mono waveform, T = 1 + len // 160.

    `wav` is numpy or torch (any device); the result lives on `device`, else on the input's
    device (CPU for numpy). The waveform is first rounded to float32, as the official path has it.
    """
    if isinstance(wav, torch.Tensor):
        device = wav.device if device is None else device
        y = wav.detach().to(device=device, dtype=torch.float32)
    else:
        y = torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)).to(device or "cpu")
    if y.ndim != 1 or y.numel() == 0:
        raise ValueError(f"ve_mel expects a non-empty mono 1-D waveform, got shape {tuple(y.shape)}")

    y64 = _reflect_pad(y.double(), VE_N_FFT // 2)
    window = torch.hann_window(VE_N_FFT, periodic=True, dtype=torch.float64, device=y.device)
    spec = torch.stft(y64, VE_N_FFT, hop_length=VE_HOP, win_length=VE_N_FFT, window=window,
                      center=False, return_complex=True)  # (201, T) complex128
    power = spec.to(torch.complex64).abs().square()  # float32, as librosa stores complex64
    bank = torch.from_numpy(mel_filterbank(VE_SAMPLE_RATE, VE_N_FFT, VE_N_MELS, VE_FMIN, VE_FMAX)).to(y.device)
    return power.T @ bank.T  # (T, 201) @ (201, 40) -> (T, 40)


def _reflect_pad(y: torch.Tensor, pad: int) -> torch.Tensor:
    """numpy-style reflect padding. torch's needs len > pad; numpy's reflects repeatedly for
    shorter signals, which is what librosa does with clips under 12.6 ms."""
    if y.numel() > pad:
        return F.pad(y[None, None], (pad, pad), mode="reflect")[0, 0]
    if y.numel() == 1:  # numpy's reflect of a single sample repeats it
        return y.repeat(2 * pad + 1)
    return torch.from_numpy(np.pad(y.cpu().numpy(), pad, mode="reflect")).to(y.device)
