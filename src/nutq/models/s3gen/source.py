"""HiFT's neural-source-filter excitation: F0 per sample -> source signal `s` (hn-NSF).

For each of `H = nb_harmonics + 1` harmonics k = 1..H the phase is the running sum of
k·F0/sr cycles (wrapped to [0, 1) before scaling by 2π, as the official code does, so that
float32 rounding matches), plus a random initial phase for k ≥ 2 (the fundamental starts at 0).
Voiced samples (F0 > threshold) carry `sine_amp · sin(·)` plus Gaussian noise of std `noise_std`;
unvoiced samples carry only noise of std `sine_amp / 3`. A Linear merges the H channels and tanh
bounds the result.

The official module draws its randomness from the global RNG: first the H initial phases
(`Uniform(-π, π)`, i.e. `-π + rand·2π`), then the (B, H, L) noise. We draw the same two tensors
in the same order from an explicit `torch.Generator`, so a CPU generator seeded with `n`
reproduces an official call made after `torch.manual_seed(n)` bit for bit, and a streamer can own
its session's randomness. Callers may also pass the two tensors pre-drawn.

The official noise branch (`randn_like(uv)`) is computed and thrown away; it is the last draw,
so skipping it changes nothing that is returned.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["draw_source_randomness", "sine_excitation", "SourceModuleHnNSF"]


def draw_source_randomness(
    batch: int,
    num_harmonics: int,
    length: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(phase (B, H, 1) in [-π, π) with phase[:, 0] = 0, noise (B, H, L) ~ N(0, 1)), float32.

    Drawn on the generator's device (CPU for the global RNG, like the official phase draw) and
    moved to `device`.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    # Uniform(low, high).sample() computes low + rand * (high - low) with float32 tensors.
    low = torch.tensor(-math.pi, dtype=torch.float32, device=gen_device)
    high = torch.tensor(math.pi, dtype=torch.float32, device=gen_device)
    u = torch.rand((batch, num_harmonics, 1), generator=generator, device=gen_device, dtype=torch.float32)
    phase = low + u * (high - low)
    phase[:, 0, :] = 0
    # The official noise follows the f0 device when it uses the global RNG.
    noise_device = gen_device if generator is not None else (device or gen_device)
    noise = torch.randn((batch, num_harmonics, length), generator=generator, device=noise_device,
                        dtype=torch.float32)
    if device is not None:
        phase, noise = phase.to(device), noise.to(device)
    return phase, noise


def sine_excitation(
    f0: torch.Tensor,
    phase: torch.Tensor,
    noise: torch.Tensor,
    sampling_rate: int,
    sine_amp: float,
    noise_std: float,
    voiced_threshold: float,
) -> torch.Tensor:
    """(B, 1, L) F0 in Hz per sample -> (B, H, L) float32 harmonic excitation.

    `phase` (B, H, 1) and `noise` (B, H, L) come from `draw_source_randomness`; H is their
    channel count. Computed in float32 whatever the input dtype (the official builds its
    frequency matrix in float32), because the phase is a long running sum.
    """
    f0 = f0.float()
    num_harmonics = phase.shape[1]
    # (B, H, L): cycles per sample of harmonic k, written as f0 * k / sr like the official so the
    # float32 values are the same.
    freqs = torch.cat([f0 * (k + 1) / sampling_rate for k in range(num_harmonics)], dim=1)
    theta = 2 * math.pi * (torch.cumsum(freqs, dim=-1) % 1)
    sines = sine_amp * torch.sin(theta + phase)
    uv = (f0 > voiced_threshold).to(torch.float32)  # (B, 1, L)
    noise_amp = uv * noise_std + (1 - uv) * sine_amp / 3
    return sines * uv + noise_amp * noise


class SourceModuleHnNSF(nn.Module):
    """Merges the harmonic excitation into one source channel: tanh(Linear(H -> 1))."""

    def __init__(self, sampling_rate: int = 24000, nb_harmonics: int = 8, sine_amp: float = 0.1,
                 noise_std: float = 0.003, voiced_threshold: float = 10.0):
        super().__init__()
        self.sampling_rate = sampling_rate
        self.num_harmonics = nb_harmonics + 1
        self.sine_amp = sine_amp
        self.noise_std = noise_std
        self.voiced_threshold = voiced_threshold
        self.l_linear = nn.Linear(self.num_harmonics, 1)

    def forward(
        self,
        f0: torch.Tensor,
        generator: torch.Generator | None = None,
        phase: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, 1, L) F0 in Hz per sample -> (B, 1, L) source, in the Linear's dtype.

        Randomness: `phase`/`noise` if given, else drawn from `generator` (global RNG if None).
        """
        if f0.dim() != 3 or f0.shape[1] != 1:
            raise ValueError(f"source module expects F0 shaped (B, 1, L), got {tuple(f0.shape)}")
        b, _, length = f0.shape
        if phase is None or noise is None:
            if phase is not None or noise is not None:
                raise ValueError("pass both phase and noise, or neither")
            phase, noise = draw_source_randomness(b, self.num_harmonics, length, generator, f0.device)
        if phase.shape != (b, self.num_harmonics, 1) or noise.shape != (b, self.num_harmonics, length):
            raise ValueError(
                f"phase/noise must be {(b, self.num_harmonics, 1)} and {(b, self.num_harmonics, length)}, "
                f"got {tuple(phase.shape)} and {tuple(noise.shape)}"
            )
        exc = sine_excitation(f0, phase.to(f0.device), noise.to(f0.device), self.sampling_rate,
                              self.sine_amp, self.noise_std, self.voiced_threshold)
        w = self.l_linear.weight
        merged = torch.tanh(self.l_linear(exc.transpose(1, 2).to(w.dtype)))  # (B, L, 1)
        return merged.transpose(1, 2)  # (B, 1, L)
