"""Resampling, in the two flavours the official conditionals preparation uses, and the polyphase
filter Perth's watermark detector uses.

- `resample` (soxr, quality HQ) equals `librosa.resample(y, orig_sr=..., target_sr=...)` with its
  default `res_type="soxr_hq"`: librosa calls `soxr.resample(row, orig, new, quality="soxr_hq")`
  on each 1-D row and then fixes the length to ceil(L · new / orig) (cut, or zero-pad at the
  end). The official pipeline uses it for the 16 kHz copy of the reference that feeds the voice
  encoder and T3's prompt tokens.
- `resample_sinc` equals torchaudio's `transforms.Resample(orig, new)` with its defaults
  (windowed-sinc `sinc_interp_hann`, lowpass_filter_width 6, rolloff 0.99, float32 kernel), in
  plain torch. S3Gen's `embed_ref` uses it for the 16 kHz audio given to CAMPPlus and the S3
  tokenizer (and for references that are not 24 kHz).

- `resample_poly` equals `librosa.resample(..., res_type="polyphase")`, i.e. scipy's
  `resample_poly` (a Kaiser-windowed sinc, β 5, half-length 10 × max(up, down) taps per phase),
  in plain torch; Perth resamples to 32 kHz with it before detecting a watermark.

The first two are different filters, and a voice prepared with one is not bit-equal to one prepared with
the other; use the one the official path uses at each place. Measured 24 kHz -> 16 kHz on 1 s
float32 test signals (`tests/test_resample.py::test_soxr_vs_sinc_difference_is_as_documented`
re-measures these), soxr taken as the reference, "interior" = without the first/last 50 ms:

| signal                                   | max abs diff | SNR (sinc vs soxr) | interior max / SNR |
|------------------------------------------|-------------:|-------------------:|-------------------:|
| 0.3·sin 440 Hz + 0.2·sin 3 kHz           | 2.1e-3       | 67.3 dB            | 1.8e-4 / 69.3 dB   |
| same + 0.2·sin 7.5 kHz                   | 0.060        | 16.8 dB            | 0.059 / 16.8 dB    |
| white noise, std 0.1                     | 0.055        | 15.6 dB            | 0.055 / 15.6 dB    |

Below ~6 kHz the two agree to ~70 dB (the edges differ a little more: torchaudio zero-pads,
soxr's filter settles differently). The difference sits just below the new Nyquist rate (93 % of
its energy above 7 kHz for white noise): the sinc filter (cutoff 0.99 · 8 kHz, 6 zero crossings)
rolls off early and gently, soxr HQ keeps a flat passband almost to 8 kHz. A 7 kHz tone comes out
1.8 dB quieter through sinc than through soxr (soxr: -0.0 dB), a 7.5 kHz tone 3.7 dB quieter
(soxr: -0.4 dB).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["resample", "resample_poly", "resample_sinc", "sinc_resample_kernel"]


def resample(wav: np.ndarray | torch.Tensor, orig_sr: int, new_sr: int) -> np.ndarray | torch.Tensor:
    """(..., L) audio -> (..., ceil(L · new_sr / orig_sr)) with soxr HQ; numpy in, numpy out
    (a tensor in gives a tensor on the same device). Same dtype as the input (float32/float64)."""
    import soxr  # imported here: only this path needs it

    if orig_sr == new_sr:
        return wav
    is_tensor = isinstance(wav, torch.Tensor)
    x = wav.detach().cpu().numpy() if is_tensor else np.asarray(wav)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"resample expects float32 or float64 audio, got {x.dtype}")
    if x.ndim == 0:
        raise ValueError("resample expects audio shaped (..., L), got a scalar")
    n_out = int(np.ceil(x.shape[-1] * (float(new_sr) / orig_sr)))
    rows = x.reshape(-1, x.shape[-1])
    out = np.zeros((rows.shape[0], n_out), dtype=x.dtype)
    for i, row in enumerate(rows):
        # One 1-D call per row, as librosa does (soxr's multi-channel layout is (L, C)).
        y = soxr.resample(np.ascontiguousarray(row), orig_sr, new_sr, quality="soxr_hq")
        n = min(n_out, y.shape[0])
        out[i, :n] = y[:n]
    out = out.reshape(x.shape[:-1] + (n_out,))
    return torch.from_numpy(out).to(wav.device) if is_tensor else out


def sinc_resample_kernel(orig_sr: int, new_sr: int, lowpass_filter_width: int = 6,
                         rolloff: float = 0.99) -> tuple[torch.Tensor, int]:
    """Polyphase windowed-sinc kernel: ((new', 1, 2·width + orig') float32, width), where
    orig'/new' are the rates divided by their gcd. Output phase j of each block of new' samples
    reads input samples at (j·orig'/new' + i/orig' …) through a Hann-windowed sinc whose cutoff is
    `rolloff` × the lower Nyquist rate and which spans `lowpass_filter_width` zero crossings."""
    if int(orig_sr) != orig_sr or int(new_sr) != new_sr or orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_sr} and {new_sr}")
    if lowpass_filter_width <= 0:
        raise ValueError("lowpass_filter_width must be positive")
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    # Computed in float64 like torchaudio, except the per-phase offset j/new', which torchaudio
    # computes by dividing an int64 arange (giving float32) before adding it to float64: keep that
    # float32 rounding so the kernels agree to the last bit.
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new + idx  # (new', 1, taps)
    t = (t * base).clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones((), dtype=t.dtype), t.sin() / t)
    kernel = kernel * (window * (base / orig))
    return kernel.to(torch.float32), width


def resample_sinc(wav: torch.Tensor, orig_sr: int, new_sr: int, lowpass_filter_width: int = 6,
                  rolloff: float = 0.99) -> torch.Tensor:
    """(..., L) float tensor -> (..., ceil(L · new_sr / orig_sr)), torchaudio `Resample` defaults."""
    if not torch.is_floating_point(wav):
        raise TypeError(f"resample_sinc expects a floating-point tensor, got {wav.dtype}")
    if orig_sr == new_sr:
        return wav
    kernel, width = sinc_resample_kernel(orig_sr, new_sr, lowpass_filter_width, rolloff)
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    shape = wav.shape
    x = wav.reshape(-1, shape[-1])  # (N, L)
    length = x.shape[-1]
    x = F.pad(x, (width, width + orig))
    y = F.conv1d(x[:, None], kernel.to(device=wav.device, dtype=wav.dtype), stride=orig)  # (N, new', blocks)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)  # (N, blocks · new'), phases interleaved
    # torchaudio takes the ceil of a float32 tensor made from the Python float; same rounding here.
    n_out = int(torch.ceil(torch.as_tensor(new * length / orig, dtype=torch.float32)).item())
    return y[:, :n_out].reshape(shape[:-1] + (n_out,))


def resample_poly(wav: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """(L,) audio -> (ceil(L · new_sr / orig_sr),) through scipy's polyphase filter, as librosa's
    `res_type="polyphase"`; same dtype as the input. Computed in float64."""
    x = np.asarray(wav)
    if x.ndim != 1 or x.dtype not in (np.float32, np.float64):
        raise ValueError(f"resample_poly expects 1-D float32/float64 audio, got {x.dtype} {x.shape}")
    if int(orig_sr) != orig_sr or int(new_sr) != new_sr or orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_sr} and {new_sr}")
    g = math.gcd(int(orig_sr), int(new_sr))
    up, down = int(new_sr) // g, int(orig_sr) // g
    if up == down:
        return x.copy()
    # scipy's filter: firwin(2·half + 1, cutoff 1/max_rate, Kaiser β 5) with unit DC gain, × up.
    max_rate = max(up, down)
    half = 10 * max_rate
    taps = np.arange(2 * half + 1) - half
    h = np.sinc(taps / max_rate) / max_rate * np.kaiser(2 * half + 1, 5.0)
    h = h / h.sum() * up
    n_out = -(-len(x) * up // down)
    # Output sample m is sum_k h[k] · x_up[m·down − k] (x_up: x with up−1 zeros after each sample),
    # scipy's alignment putting output 0 at the filter's centre: a cross-correlation with the
    # reversed filter over x_up padded by `half` in front, read every `down` samples.
    x_up = torch.zeros((len(x) - 1) * up + 1, dtype=torch.float64)
    x_up[::up] = torch.from_numpy(x.astype(np.float64))
    need = (n_out - 1) * down + len(h)
    x_up = F.pad(x_up, (half, max(0, need - half - x_up.numel())))
    kernel = torch.from_numpy(h[::-1].copy())[None, None]
    y = F.conv1d(x_up[None, None], kernel, stride=down)[0, 0, :n_out]
    return y.numpy().astype(x.dtype)
