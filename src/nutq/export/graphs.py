"""The exportable graphs: thin `nn.Module`s over nutq's model code with fixed, tensor-only signatures.

Each wrapper calls the model's own forward (no second implementation of any layer), so a graph is
the PyTorch path by construction; the test suite checks it numerically after export. What changes
for export:

* T3 runs over a *functional* KV cache: the decode graph takes the past keys/values
  (layers, batch, kv_heads, past, head_dim) and returns them grown by one position (the prefill
  graph starts from none). The backbone still writes its static cache in place; here each layer's
  cache is a fresh tensor made of past ++ one empty slot, which the exporter turns into a pure
  function.
  Embeddings, conditioning and the speech head stay in PyTorch: they are lookups and one matmul
  per step, and keeping them there leaves the graph free of the sampling-specific layout.
* HiFT's STFT and inverse STFT become convolutions with DFT bases (`DFT_STFT`): ONNX has an STFT
  operator but no inverse one, and TensorRT and Core ML support neither in a usable form.
* The F0 predictor and the decoder of HiFT are separate graphs; the sine source between them draws
  random numbers (its noise and initial phases), which stays in PyTorch with the session's seed.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["T3Prefill", "T3Decode", "EstimatorCFM", "EstimatorMeanFlow", "FlowEncoder", "HiFTF0", "HiFTDecode",
           "DFT_STFT"]


def _split(out, probes):
    return out if probes else (out, None)


class _LayerKV:
    """A cache as one tensor per layer (what the backbone indexes as `cache.k[layer]`).

    One 5-D tensor would be functionalised into a copy of the whole cache per layer written
    (O(layers²) per step); per-layer tensors are copied once each, like a concatenating cache."""

    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor]):
        self.k, self.v = k, v

    @property
    def max_len(self) -> int:
        return self.k[0].shape[2]

    def stacked(self):
        return torch.stack(self.k), torch.stack(self.v)


class T3Prefill(nn.Module):
    """embeds (B, T, C) at positions 0..T-1 -> last hidden (B, C), keys, values (L, B, H, T, D)
    [, probe attention of row 0 (n_probes, T, T)]."""

    def __init__(self, t3: nn.Module, probes: tuple[tuple[int, int], ...] = ()):
        super().__init__()
        self.t3, self.probes = t3, tuple(probes)

    def forward(self, embeds: torch.Tensor):
        cfg = self.t3.cfg.llama
        shape = (embeds.shape[0], cfg.num_kv_heads, embeds.shape[1], cfg.head_dim)
        cache = _LayerKV([embeds.new_zeros(shape) for _ in range(cfg.num_layers)],
                         [embeds.new_zeros(shape) for _ in range(cfg.num_layers)])
        h, attn = _split(self.t3.forward_hidden(embeds, 0, cache, probes=self.probes), self.probes)
        out = (h[:, -1], *cache.stacked())
        return (*out, attn) if self.probes else out


class T3Decode(T3Prefill):
    """embeds (B, 1, C) at position P, past keys/values (L, B, H, P, D) -> last hidden (B, C),
    present keys/values (L, B, H, P+1, D) [, probe attention of row 0 (n_probes, 1, P+1)]."""

    def forward(self, embeds: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor):
        slot = past_k.new_zeros((*past_k.shape[1:3], 1, past_k.shape[4]))
        cache = _LayerKV([torch.cat([k, slot], dim=2) for k in past_k.unbind(0)],
                         [torch.cat([v, slot], dim=2) for v in past_v.unbind(0)])
        h, attn = _split(self.t3.forward_hidden(embeds, past_k.shape[3], cache, probes=self.probes), self.probes)
        out = (h[:, -1], *cache.stacked())
        return (*out, attn) if self.probes else out


class EstimatorCFM(nn.Module):
    """The 10-step decoder's estimator: v(x, mask, mu, t, spks, cond), all (B, 80, T) but
    mask (B, 1, T), t (B,), spks (B, 80). Always with the key-padding bias (exact for any mask)."""

    def __init__(self, estimator: nn.Module):
        super().__init__()
        self.estimator = estimator

    def forward(self, x, mask, mu, t, spks, cond):
        return self.estimator(x, mask, mu, t, spks, cond, padded=True)


class EstimatorMeanFlow(EstimatorCFM):
    """The distilled decoder's estimator: u(x, mask, mu, t, spks, cond, r), r (B,) the step's end."""

    def forward(self, x, mask, mu, t, spks, cond, r):
        return self.estimator(x, mask, mu, t, spks, cond, r=r, padded=True)


class FlowEncoder(nn.Module):
    """Token embeddings (B, T, 512) and lengths (B,) -> h (B, 2T, C) and valid-frame mask (B, 1, 2T).

    Exported with `isolate_rows=True`: identical to the default for unpadded rows, and padded rows
    then equal themselves alone (what batched streaming needs)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, xs, xs_lens):
        return self.encoder(xs, xs_lens, isolate_rows=True)


class HiFTF0(nn.Module):
    """mel (B, 80, T) -> F0 (B, T) in Hz."""

    def __init__(self, hift: nn.Module):
        super().__init__()
        self.hift = hift

    def forward(self, mel):
        return self.hift.f0(mel)


class DFT_STFT:
    """HiFT's centered STFT / iSTFT (periodic Hann, reflect padding) as convolutions.

    STFT: reflect-pad by n/2, then one strided conv1d whose 2·bins filters are the windowed cosines
    and negated sines. iSTFT: a 1×1 conv with the inverse real DFT basis (times the window) gives
    each frame's samples, a transposed conv with an identity kernel overlap-adds them, and the sum
    of squared windows (the same transposed conv over constant frames) is divided out, then n/2 is
    trimmed from each end: the definition torch.istft implements.
    """

    def __init__(self, n_fft: int, hop: int, window: torch.Tensor):
        n, bins = n_fft, n_fft // 2 + 1
        self.n, self.hop = n, hop
        k = torch.arange(bins, dtype=torch.float64)[:, None]
        t = torch.arange(n, dtype=torch.float64)[None, :]
        ang = 2 * math.pi * k * t / n  # (bins, n)
        w = window.double()
        self.analysis = torch.cat([torch.cos(ang) * w, -torch.sin(ang) * w]).float()[:, None]  # (2·bins, 1, n)
        scale = torch.full((bins, 1), 2.0, dtype=torch.float64)
        scale[0] = 1.0
        if n % 2 == 0:
            scale[-1] = 1.0  # the Nyquist bin appears once in a real signal's spectrum
        # synthesis[t, k]: sample t of a frame from bin k's real (first bins) and imaginary parts.
        synth = torch.cat([torch.cos(ang) * scale, -torch.sin(ang) * scale]).T / n * w[:, None]  # (n, 2·bins)
        self.synthesis = synth.float()[:, :, None]  # (n, 2·bins, 1)
        self.overlap = torch.eye(n)[:, None]  # (n, 1, n)
        self.window_sq = (w ** 2).float()[None, :, None]  # (1, n, 1)

    def stft(self, s: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, 2·bins, L/hop + 1)."""
        x = F.pad(s.float()[:, None], (self.n // 2, self.n // 2), mode="reflect")
        return F.conv1d(x, self.analysis.to(x.device), stride=self.hop)

    def istft(self, re_im: torch.Tensor) -> torch.Tensor:
        """(B, 2·bins, frames) real then imaginary parts -> (B, (frames-1)·hop)."""
        frames = F.conv1d(re_im, self.synthesis.to(re_im.device))  # (B, n, F)
        overlap = self.overlap.to(re_im.device)
        y = F.conv_transpose1d(frames, overlap, stride=self.hop)[:, 0]  # (B, (F-1)·hop + n)
        env = F.conv_transpose1d(self.window_sq.to(re_im.device).expand(1, -1, frames.shape[2]), overlap,
                                 stride=self.hop)[:, 0]
        y = y / env.clamp(min=1e-11)
        length = (frames.shape[2] - 1) * self.hop
        return y[:, self.n // 2: self.n // 2 + length]


@contextlib.contextmanager
def _dft_hift(hift: nn.Module):
    """HiFT with its `_stft`/`_istft` replaced by `DFT_STFT` for the duration (instance attributes
    shadow the methods; the rest of `decode` is HiFT's own code)."""
    from ..models.s3gen.hift import _hann

    cfg = hift.cfg
    dft = DFT_STFT(cfg.n_fft, cfg.hop, _hann(cfg.n_fft, torch.device("cpu")))

    def istft(log_mag, phase_in):
        mag = torch.exp(log_mag.float()).clamp(max=1e2)
        phase = torch.sin(phase_in.float())  # the official sin() before the angle, as in HiFT
        return dft.istft(torch.cat([mag * torch.cos(phase), mag * torch.sin(phase)], dim=1))

    hift._stft, hift._istft = dft.stft, istft
    try:
        yield hift
    finally:
        del hift._stft, hift._istft


class HiFTDecode(nn.Module):
    """mel (B, 80, T) and source (B, 1, 480·T) -> waveform (B, 480·T)."""

    def __init__(self, hift: nn.Module):
        super().__init__()
        self.hift = hift

    def forward(self, mel, source):
        with _dft_hift(self.hift) as h:
            return h.decode(mel, source)
