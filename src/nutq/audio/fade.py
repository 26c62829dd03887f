"""S3Gen's start-of-utterance trim-fade.

The official S3Gen multiplies the start of every waveform it returns by a fixed curve: the first
20 ms (480 samples at 24 kHz) are zeroed and the next 20 ms rise with a raised cosine from 0 to 1.
It hides "spill-over" from the reference clip at the very start. Applied to every chunk of a stream
it would punch a hole into each seam, so a streamer applies it to the first chunk only.
"""

from __future__ import annotations

import math

import torch

__all__ = ["TRIM_SAMPLES", "trim_fade_curve", "apply_trim_fade"]

TRIM_SAMPLES = 480  # 20 ms at 24 kHz: S3GEN_SR // 50


def trim_fade_curve(n_trim: int = TRIM_SAMPLES, *, device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(2·n_trim,) gains: n_trim zeros, then (cos(linspace(π, 0, n_trim)) + 1) / 2 rising 0 -> 1."""
    curve = torch.zeros(2 * n_trim, device=device)
    # float32 linspace/cos like the official buffer, converted once at the end.
    curve[n_trim:] = (torch.cos(torch.linspace(math.pi, 0, n_trim, device=device)) + 1) / 2
    return curve.to(dtype)


def apply_trim_fade(wav: torch.Tensor, n_trim: int = TRIM_SAMPLES) -> torch.Tensor:
    """(..., L) waveform -> a copy whose first min(L, 2·n_trim) samples are multiplied by the curve."""
    curve = trim_fade_curve(n_trim, device=wav.device, dtype=wav.dtype)
    n = min(wav.shape[-1], curve.shape[0])
    out = wav.clone()
    out[..., :n] *= curve[:n]
    return out
