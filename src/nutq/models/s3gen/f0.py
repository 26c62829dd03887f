"""HiFT's F0 predictor: mel frames -> fundamental frequency (Hz) per frame.

Five weight-normed k3 convolutions with ELU, then a per-frame Linear to one value and `abs`
(a negative frequency means nothing, and the source module only compares F0 with its voicing
threshold and integrates it). State-dict names follow the official `f0_predictor.*` layout:
`condnet.{0,2,4,6,8}` are the convolutions (the ELUs sit at the odd indices and hold nothing),
`classifier` is the Linear.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

__all__ = ["F0Predictor"]


class F0Predictor(nn.Module):
    def __init__(self, in_channels: int = 80, channels: int = 512, num_layers: int = 5):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(num_layers):
            layers.append(weight_norm(nn.Conv1d(in_channels if i == 0 else channels, channels, 3, padding=1)))
            layers.append(nn.ELU())
        self.condnet = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """(B, n_mels, T) log-mel -> (B, T) F0 in Hz (non-negative)."""
        h = self.condnet(mel).transpose(1, 2)  # (B, T, C)
        return self.classifier(h).squeeze(-1).abs()
