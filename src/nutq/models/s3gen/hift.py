"""HiFT vocoder (S3Gen's `mel2wav`): 80-band 24 kHz log-mel -> waveform, 480 samples per frame.

HiFTNet = neural source filter + iSTFTNet. Per mel frame the F0 predictor gives a pitch; the
source module turns it (upsampled ×480 by repetition) into a noisy harmonic excitation `s`. The
generator upsamples the mel ×120 with three transposed convolutions, adds the STFT of `s`
(n_fft 16, hop 4) brought to each stage's rate by a strided conv and a ResBlock, and predicts
a 9-bin log-magnitude and a phase per hop; an inverse STFT with hop 4 gives the ×480.

The source is random (initial harmonic phases and noise). `inference` takes an explicit
`torch.Generator`, `source` also pre-drawn tensors, and `decode(mel, s)` takes a source
directly, so parity tests and streamers control it. `cache_source` overwrites the first samples
of a new source with the tail kept from the previous chunk, which keeps the excitation
continuous across chunks.

State-dict keys are the official `mel2wav.*` keys without the prefix, including the
weight-norm parametrization names (`*.parametrizations.weight.original0/1`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from .f0 import F0Predictor
from .source import SourceModuleHnNSF

__all__ = ["HiFTConfig", "FULL", "TINY", "Snake", "ResBlock", "HiFTGenerator"]


@dataclass(frozen=True)
class HiFTConfig:
    in_channels: int = 80
    base_channels: int = 512
    nb_harmonics: int = 8
    sampling_rate: int = 24000
    nsf_alpha: float = 0.1  # sine amplitude
    nsf_sigma: float = 0.003  # noise std in voiced samples
    nsf_voiced_threshold: float = 10.0  # Hz
    upsample_rates: tuple[int, ...] = (8, 5, 3)
    upsample_kernel_sizes: tuple[int, ...] = (16, 11, 7)
    n_fft: int = 16
    hop: int = 4
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    source_resblock_kernel_sizes: tuple[int, ...] = (7, 7, 11)
    source_resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    lrelu_slope: float = 0.1
    audio_limit: float = 0.99
    f0_channels: int = 512
    f0_layers: int = 5

    @property
    def samples_per_frame(self) -> int:
        """Output samples per mel frame: ∏ upsample rates × iSTFT hop (480 at 24 kHz)."""
        n = self.hop
        for u in self.upsample_rates:
            n *= u
        return n


FULL = HiFTConfig()
# Same key structure and the same rates/kernels (so every padding rule is exercised), narrow widths.
TINY = HiFTConfig(base_channels=32, f0_channels=16)


class Snake(nn.Module):
    """x + sin²(αx)/α with a learned α per channel (the 1e-9 keeps α = 0 finite)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha[None, :, None]  # (1, C, 1)
        return x + (1.0 / (alpha + 1e-9)) * torch.sin(x * alpha).pow(2)


class ResBlock(nn.Module):
    """Residual stack: for each dilation d, x += conv2(snake(conv1_d(snake(x)))), 'same' padding."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=d * (kernel_size - 1) // 2))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2))
            for _ in dilations
        )
        self.activations1 = nn.ModuleList(Snake(channels) for _ in dilations)
        self.activations2 = nn.ModuleList(Snake(channels) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2, a1, a2 in zip(self.convs1, self.convs2, self.activations1, self.activations2):
            x = c2(a2(c1(a1(x)))) + x
        return x


def _hann(n_fft: int, device: torch.device) -> torch.Tensor:
    # Periodic Hann computed in float64 and rounded once, as scipy's get_window(fftbins=True).
    return torch.hann_window(n_fft, periodic=True, dtype=torch.float64, device=device).float()


class HiFTGenerator(nn.Module):
    def __init__(self, cfg: HiFTConfig = FULL):
        super().__init__()
        self.cfg = cfg
        c = cfg.base_channels
        n_bins = cfg.n_fft // 2 + 1
        self.m_source = SourceModuleHnNSF(cfg.sampling_rate, cfg.nb_harmonics, cfg.nsf_alpha,
                                          cfg.nsf_sigma, cfg.nsf_voiced_threshold)
        self.conv_pre = weight_norm(nn.Conv1d(cfg.in_channels, c, 7, padding=3))
        self.ups = nn.ModuleList(
            weight_norm(nn.ConvTranspose1d(c // 2**i, c // 2 ** (i + 1), k, u, padding=(k - u) // 2))
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        # Stage i runs at (∏ rates[:i+1]) × the mel rate; the source STFT runs at (∏ rates) × the
        # mel rate (+1 frame), so stage i needs it downsampled by ∏ rates[i+1:].
        self.source_downs = nn.ModuleList()
        self.source_resblocks = nn.ModuleList()
        for i, (k, d) in enumerate(zip(cfg.source_resblock_kernel_sizes, cfg.source_resblock_dilation_sizes)):
            ch = c // 2 ** (i + 1)
            down = 1
            for u in cfg.upsample_rates[i + 1:]:
                down *= u
            if down == 1:
                self.source_downs.append(nn.Conv1d(2 * n_bins, ch, 1))
            else:
                self.source_downs.append(nn.Conv1d(2 * n_bins, ch, 2 * down, down, padding=down // 2))
            self.source_resblocks.append(ResBlock(ch, k, tuple(d)))
        self.resblocks = nn.ModuleList(
            ResBlock(c // 2 ** (i + 1), k, tuple(d))
            for i in range(len(cfg.upsample_rates))
            for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
        )
        self.conv_post = weight_norm(nn.Conv1d(c // 2 ** len(cfg.upsample_rates), 2 * n_bins, 7, padding=3))
        self.f0_predictor = F0Predictor(cfg.in_channels, cfg.f0_channels, cfg.f0_layers)

    # ---------------------------------------------------------------- pieces

    def _check_mel(self, mel: torch.Tensor) -> None:
        if mel.dim() != 3 or mel.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"HiFT expects a mel shaped (B, {self.cfg.in_channels}, T), got {tuple(mel.shape)}; "
                "S3Gen's flow returns (B, 80, T), a (B, T, 80) mel needs .transpose(1, 2)"
            )
        if mel.shape[2] == 0:
            raise ValueError("HiFT got a mel with 0 frames; it needs at least 1 frame")

    def fold_weight_norm(self) -> None:
        """Replace every weight-norm parametrization (here and in the F0 predictor) by the weight it
        computes, once: the outputs are the same, without recomputing g·v/‖v‖ for each conv on
        every call. The loader does it after loading (and casting); state-dict keys then name
        plain `weight`s, so fold only a module that will not be saved or loaded again."""
        for m in [m for m in self.modules() if parametrize.is_parametrized(m, "weight")]:
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)

    after_load = fold_weight_norm  # called by models.loading.load_module

    def f0(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, 80, T) -> (B, T) F0 in Hz per mel frame."""
        self._check_mel(mel)
        # The mel may come from a flow in another dtype (bf16 flow, fp32 vocoder).
        return self.f0_predictor(mel.to(self.conv_pre.bias.dtype))

    def source(
        self,
        f0: torch.Tensor,
        generator: torch.Generator | None = None,
        phase: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, T) F0 per frame -> (B, 1, T·480) source; repeats each frame's F0 480 times."""
        f0_samples = torch.repeat_interleave(f0[:, None, :], self.cfg.samples_per_frame, dim=2)  # (B, 1, L)
        return self.m_source(f0_samples, generator=generator, phase=phase, noise=noise)

    def _stft(self, s: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, 2·bins, L/hop + 1): real parts then imaginary parts (centered, reflect)."""
        n = self.cfg.n_fft
        spec = torch.stft(s.float(), n, self.cfg.hop, n, window=_hann(n, s.device), center=True,
                          pad_mode="reflect", return_complex=True)  # (B, bins, frames)
        return torch.cat([spec.real, spec.imag], dim=1)

    def _istft(self, log_mag: torch.Tensor, phase_in: torch.Tensor) -> torch.Tensor:
        """(B, bins, frames) log-magnitude and phase pre-activation -> (B, (frames-1)·hop)."""
        n = self.cfg.n_fft
        mag = torch.exp(log_mag.float()).clamp(max=1e2)
        # The official passes the phase through sin() before using it as an angle; kept for parity.
        phase = torch.sin(phase_in.float())
        spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
        # Centered iSTFT: windowed overlap-add divided by the summed squared window, n_fft/2 trimmed
        # from each end; output length (frames - 1)·hop.
        return torch.istft(spec, n, self.cfg.hop, n, window=_hann(n, spec.device), center=True,
                           normalized=False, onesided=True)

    def decode(self, mel: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """(B, 80, T) mel and (B, 1, T·480) source -> (B, T·480) waveform in [-0.99, 0.99]."""
        self._check_mel(mel)
        cfg = self.cfg
        want = mel.shape[2] * cfg.samples_per_frame
        if s.dim() != 3 or s.shape[1] != 1 or s.shape[2] != want:
            raise ValueError(f"source must be (B, 1, {want}) for {mel.shape[2]} mel frames, got {tuple(s.shape)}")
        dtype = self.conv_pre.bias.dtype
        s_stft = self._stft(s.squeeze(1)).to(dtype)  # (B, 2·bins, 120·T + 1)
        x = self.conv_pre(mel.to(dtype))
        nk = len(cfg.resblock_kernel_sizes)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, cfg.lrelu_slope))
            if i == len(self.ups) - 1:
                # One extra frame on the left so the length matches the centered source STFT.
                x = F.pad(x, (1, 0), mode="reflect")
            x = x + self.source_resblocks[i](self.source_downs[i](s_stft))
            xs = self.resblocks[i * nk](x)
            for j in range(1, nk):
                xs = xs + self.resblocks[i * nk + j](x)
            x = xs / nk
        x = self.conv_post(F.leaky_relu(x, 0.01))  # (B, 2·bins, frames); slope 0.01 here, not 0.1
        bins = cfg.n_fft // 2 + 1
        wav = self._istft(x[:, :bins], x[:, bins:])
        return wav.clamp(-cfg.audio_limit, cfg.audio_limit).to(dtype)

    # ---------------------------------------------------------------- entry points

    def forward(
        self,
        mel: torch.Tensor,
        cache_source: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 80, T) mel -> (wav (B, T·480), source (B, 1, T·480)).

        `cache_source` (B, 1, n) replaces the first n source samples (the tail of the previous
        chunk's source, for continuity); `generator` fixes the source's randomness.
        """
        f0 = self.f0(mel)
        s = self.source(f0, generator=generator)
        if cache_source is not None and cache_source.shape[-1] > 0:
            n = cache_source.shape[-1]
            if cache_source.dim() != 3 or cache_source.shape[1] != 1 or n > s.shape[2]:
                raise ValueError(
                    f"cache_source must be (B, 1, n) with n <= {s.shape[2]} source samples, "
                    f"got {tuple(cache_source.shape)}"
                )
            s = torch.cat([cache_source.to(s.dtype).expand(s.shape[0], 1, n), s[:, :, n:]], dim=2)
        return self.decode(mel, s), s

    @torch.no_grad()
    def inference(
        self,
        mel: torch.Tensor,
        cache_source: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`forward` without autograd: the official `HiFTGenerator.inference` with explicit RNG."""
        return self.forward(mel, cache_source=cache_source, generator=generator)
