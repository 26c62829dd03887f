"""The S3 speech tokenizer's log-mel front end (Whisper style, 16 kHz, 100 frames/s).

Recipe (the official tokenizer's, for one utterance): centred STFT (n_fft 400, hop 160, periodic
Hann(400), reflect padding of 200 samples at both ends), power spectrum, the last frame dropped
(so T = N // 160), 128 Slaney mel filters (fmax 8 kHz), log10 of max(·, 1e-10), floor at 8 below
the utterance's own maximum (dynamic range of 80 dB), then (x + 4) / 4.

The floor is relative to the maximum of *each utterance*: the official wrapper computes one mel
per waveform (even when handed a batch), so a batch here takes the maximum per row, never over the
whole batch. The filterbank and window are buffers of the tokenizer module (they are stored in
s3gen.pt), so they are passed in rather than rebuilt here.
"""

from __future__ import annotations

import numpy as np
import torch

from nutq.audio.melbank import mel_filterbank

__all__ = ["S3_SAMPLE_RATE", "S3_N_FFT", "S3_HOP", "S3_N_MELS", "s3_mel_filters", "s3_window",
           "s3_num_frames", "s3_log_mel"]

S3_SAMPLE_RATE = 16_000
S3_N_FFT = 400
S3_HOP = 160  # 10 ms: 100 mel frames/s, 4 frames per 25 Hz speech token
S3_N_MELS = 128
_LOG10_FLOOR = 1e-10
_DYNAMIC_RANGE = 8.0  # in log10 units, i.e. 80 dB


def s3_mel_filters(n_mels: int = S3_N_MELS) -> torch.Tensor:
    """(n_mels, 201) float32 Slaney filters for 16 kHz / n_fft 400 (librosa's defaults, fmax = 8 kHz)."""
    return torch.from_numpy(np.ascontiguousarray(mel_filterbank(S3_SAMPLE_RATE, S3_N_FFT, n_mels)))


def s3_window() -> torch.Tensor:
    """(400,) periodic Hann window, torch's default."""
    return torch.hann_window(S3_N_FFT)


def s3_num_frames(num_samples: int) -> int:
    """Mel frames for `num_samples` of audio: the centred STFT gives N // 160 + 1, minus the last."""
    return num_samples // S3_HOP


def s3_log_mel(wav16k: torch.Tensor, mel_filters: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Normalised log-mel: (N,) -> (n_mels, N // 160) or (B, N) -> (B, n_mels, N // 160).

    Rows of a 2-D input are separate utterances of equal length, each normalised by its own maximum.
    Raises ValueError when the audio is too short for the centred STFT (reflect padding of
    n_fft // 2 = 200 samples needs more than 200 samples).
    """
    if wav16k.dim() not in (1, 2):
        raise ValueError(f"expected (N,) or (B, N) audio, got shape {tuple(wav16k.shape)}")
    num_samples = wav16k.shape[-1]
    if num_samples <= S3_N_FFT // 2:
        raise ValueError(
            f"audio of {num_samples} samples is too short for the S3 tokenizer front end "
            f"(needs more than {S3_N_FFT // 2} samples at 16 kHz)"
        )
    spec = torch.stft(wav16k, S3_N_FFT, S3_HOP, window=window.to(wav16k.device, wav16k.dtype),
                      center=True, pad_mode="reflect", return_complex=True)  # (..., 201, N // 160 + 1)
    power = spec[..., :-1].abs() ** 2  # the last centred frame is dropped: (..., 201, T)
    mel = mel_filters.to(power.device, power.dtype) @ power  # (..., n_mels, T)
    log_mel = torch.clamp(mel, min=_LOG10_FLOOR).log10()
    peak = log_mel.amax(dim=(-2, -1), keepdim=True)  # per utterance
    log_mel = torch.maximum(log_mel, peak - _DYNAMIC_RANGE)
    return (log_mel + 4.0) / 4.0
