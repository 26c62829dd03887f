"""Perth's implicit watermark network (`resemble-perth`, MIT), run by nutq's own torch code.

Perth hides a mark in the magnitude spectrum below 2 kHz at 32 kHz. `PerthNet` holds its two
networks under the names of Perth's checkpoint; `mark` and `score` are the signal paths around
them (resampling, STFT, dB scaling), step for step as Perth's `PerthImplicitWatermarker` does,
but without torchaudio or librosa: the STFTs are torch's own (what torchaudio's transforms call),
the resamplers those of `nutq.audio.resample` (soxr HQ, librosa's default, to mark; scipy's
polyphase filter, which Perth's detector asks librosa for, to detect). docs/model.md has the
numbers; tests/test_watermark_parity.py proves both paths equal to Perth's.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .resample import resample, resample_poly

__all__ = ["HPARAMS", "PerthNet", "mark", "score"]

# The network's hyperparameters (Perth's hparams.yaml for the shipped "implicit" checkpoint);
# the loader checks the installed file says the same.
HPARAMS = {"sample_rate": 32000, "n_fft": 2048, "hop_size": 320, "window_size": 2048, "window_fn": "hann",
           "stft_magnitude_min": 1e-9, "max_wmark_freq": 2000, "hidden_size": 256}
SAMPLE_RATE = HPARAMS["sample_rate"]
N_FFT, HOP = HPARAMS["n_fft"], HPARAMS["hop_size"]
# Lowest bins that carry the mark: round(1025 bins · 2 kHz / 16 kHz) = 128.
SUBBAND = int(round((N_FFT // 2 + 1) * HPARAMS["max_wmark_freq"] / (SAMPLE_RATE / 2)))
MIN_LEVEL_DB = float(20 * np.log10(HPARAMS["stft_magnitude_min"]))  # -180 dB, computed as Perth does
HEADROOM_DB = 15.0
ACTIVE_FRAME = 0.05  # frames whose summed level is above this share of the loudest one carry a mark


class _Conv(nn.Module):
    """Conv1d with 'same' padding, then LeakyReLU(0.01) unless last."""

    def __init__(self, c_in: int, c_out: int, k: int, act: bool = True):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, k, padding=(k - 1) // 2)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return F.leaky_relu(x) if self.act else x


def _stack(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(_Conv(c_in, hidden, 1), *[_Conv(hidden, hidden, 7) for _ in range(5)],
                         _Conv(hidden, c_out, 1, act=False))


def _active_frames(mag: torch.Tensor) -> torch.Tensor:
    """(B, F, T) normalised magnitudes -> (B, 1, T) 1.0 where a frame is loud enough to carry a mark."""
    level = mag.sum(dim=1)
    return (level > level.max(dim=1).values[:, None] * ACTIVE_FRAME).float()[:, None]


class _Encoder(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.layers = _stack(SUBBAND, hidden, SUBBAND)

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        """(B, F, T) -> the same with a residual added to the marked band of active frames."""
        out = mag.clone()
        out[:, :SUBBAND] += self.layers(mag[:, :SUBBAND]) * _active_frames(mag)
        return out


class _Decoder(nn.Module):
    """Three branches read the band at 1.25x, 1x and 0.75x the frame rate; each gives a mark and
    an attention logit per frame, averaged over active frames; a softmax over the three logits
    weights their marks."""

    SCALES = {"slow_layers": 1.25, "normal_layers": 1.0, "fast_layers": 0.75}

    def __init__(self, hidden: int):
        super().__init__()
        for name in self.SCALES:
            setattr(self, name, _stack(SUBBAND, hidden, 2))

    def forward(self, mag: torch.Tensor) -> torch.Tensor:
        """(B, F, T) -> (B,) watermark score (not yet clipped to [0, 1])."""
        active = _active_frames(mag)
        band = mag[:, :SUBBAND]
        frames = band.shape[2]
        marks, logits = [], []
        for name, scale in self.SCALES.items():
            x = band if scale == 1.0 else F.interpolate(band, size=int(frames * scale), mode="linear",
                                                         align_corners=True)
            out = getattr(self, name)(x)  # (B, 2, T'): attention logit, mark
            m = F.interpolate(active, size=out.shape[2], mode="nearest")
            mean = (out * m).sum(dim=2) / m.sum(dim=2)  # (B, 2)
            logits.append(mean[:, :1])
            marks.append(mean[:, 1:])
        weights = torch.softmax(torch.cat(logits, dim=1), dim=1)
        return (torch.cat(marks, dim=1) * weights).sum(dim=1)


class PerthNet(nn.Module):
    """Perth's encoder and decoder (state-dict keys `encoder.*`, `decoder.*`) and the STFT window
    it was trained with (the checkpoint's `ap.spectrogram.window`)."""

    def __init__(self, hidden: int = HPARAMS["hidden_size"]):
        super().__init__()
        self.encoder = _Encoder(hidden)
        self.decoder = _Decoder(hidden)
        self.register_buffer("window", torch.hann_window(HPARAMS["window_size"]), persistent=False)

    def spectrum(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L,) float32 at 32 kHz -> (normalised dB magnitude, phase), each (1025, T)."""
        spec = torch.stft(x, N_FFT, HOP, HPARAMS["window_size"], self.window, center=True, pad_mode="reflect",
                          normalized=False, onesided=True, return_complex=True)
        mag = 20 * torch.log10(spec.abs().clip(HPARAMS["stft_magnitude_min"]))
        return (mag - MIN_LEVEL_DB) / (-MIN_LEVEL_DB + HEADROOM_DB), torch.angle(spec)

    def signal(self, mag: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
        """Inverse of `spectrum`; the length is HOP · (frames − 1), as Perth's round trip gives."""
        db = mag * (-MIN_LEVEL_DB + HEADROOM_DB) + MIN_LEVEL_DB
        spec = 10.0 ** (db / 20).clip(max=10) * torch.exp(1j * phase)
        return torch.istft(spec, N_FFT, HOP, HPARAMS["window_size"], self.window, center=True, normalized=False,
                           onesided=True)


@torch.inference_mode()
def mark(net: PerthNet, wav: np.ndarray, sr: int) -> np.ndarray:
    """(N,) float32 at `sr` -> Perth's watermarked signal, as `apply_watermark` returns it (the
    STFT round trip may drop up to one hop at 32 kHz from the end)."""
    x = resample(wav, sr, SAMPLE_RATE) if sr != SAMPLE_RATE else wav
    mag, phase = net.spectrum(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    y = net.signal(net.encoder(mag[None])[0], phase).numpy()
    return resample(y, SAMPLE_RATE, sr) if sr != SAMPLE_RATE else y


@torch.inference_mode()
def score(net: PerthNet, wav: np.ndarray, sr: int) -> float:
    """Perth's detector output in [0, 1] for (N,) audio at `sr` (`get_watermark(round=False)`).
    Audio with no frame loud enough to carry a mark (digital silence) scores 0.0, where Perth's own
    arithmetic gives NaN."""
    x = resample_poly(np.asarray(wav, dtype=np.float32), sr, SAMPLE_RATE) if sr != SAMPLE_RATE else wav
    mag, _ = net.spectrum(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    value = float(net.decoder(mag[None])[0].clip(0.0, 1.0))
    return 0.0 if math.isnan(value) else value
