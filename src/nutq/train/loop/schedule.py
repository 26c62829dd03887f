"""AdamW and the linear-warmup + cosine-decay learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

__all__ = ["make_adamw", "warmup_cosine", "lr_factor"]


def make_adamw(params: Iterable[torch.nn.Parameter], lr: float, *, weight_decay: float = 0.01,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW over the parameters that require grad. The non-foreach loop keeps the update order
    fixed across runs, which the exact-resume guarantee relies on as much as the state itself."""
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("nothing to train: no parameter requires grad")
    return torch.optim.AdamW(trainable, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=False)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear from 1/warmup up to 1
    over `warmup` steps, then a half cosine down to `min_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, *, warmup: int, total: int,
                  min_ratio: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    if total < 1:
        raise ValueError(f"total steps must be >= 1, got {total}")
    if warmup < 0:
        raise ValueError(f"warmup steps must be >= 0, got {warmup}")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total, min_ratio))
