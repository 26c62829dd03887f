"""ODE solvers that turn noise into a mel with the flow estimator.

A solver is any callable `(estimator, z, mu, mask, spks, cond) -> mel`. The official multilingual
model uses `EulerCFG` (10 Euler steps on a cosine time grid, classifier-free guidance with the
conditional and unconditional rows in one batch of 2B). A distilled few-step solver can be passed
to `Flow.inference(solver=...)` instead without touching the model code.

`CFMDecoder` is the `flow.decoder` module: it only holds the estimator (official key prefix
`decoder.estimator.`) and hands it to a solver.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from nutq.models.s3gen.estimator import ESTIMATOR_FULL, ConditionalDecoder, EstimatorConfig

__all__ = ["Solver", "EulerCFG", "CFMDecoder", "cosine_time_grid"]


class Solver(Protocol):
    def __call__(
        self, estimator: ConditionalDecoder, z: Tensor, mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor
    ) -> Tensor: ...


def cosine_time_grid(n_steps: int, device=None, dtype=torch.float32) -> Tensor:
    """t_k = 1 - cos(k/n * pi/2), k = 0..n: small steps near the noise end, large near the data end."""
    t = torch.linspace(0, 1, n_steps + 1, device=device, dtype=dtype)
    return 1 - torch.cos(t * 0.5 * math.pi)


@dataclass(frozen=True)
class EulerCFG:
    """Euler integration of dx/dt = (1+r)·v(x, cond) - r·v(x, no cond) on a cosine grid.

    The unconditional row zeroes mu, spks and cond (x, mask and t are shared). Both rows run in one
    estimator call of batch 2B, conditional rows first, as the official solver does.
    """

    n_timesteps: int = 10
    cfg_rate: float = 0.7

    def __call__(
        self, estimator: ConditionalDecoder, z: Tensor, mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor
    ) -> Tensor:
        out_dtype = z.dtype
        dt_ = estimator.dtype
        # The time grid stays fp32 even for a bf16/fp16 estimator (the official code casts it, which
        # only loses precision); in fp32 the two agree exactly.
        t_span = cosine_time_grid(self.n_timesteps, device=mu.device)
        x, mu, mask, spks, cond = (v.to(dt_) for v in (z, mu, mask, spks, cond))
        b = x.size(0)
        # Per-call constants of the 2B batch: [conditional rows; unconditional rows].
        mu_in = torch.cat([mu, torch.zeros_like(mu)])  # (2B, 80, T)
        spks_in = torch.cat([spks, torch.zeros_like(spks)])  # (2B, 80)
        cond_in = torch.cat([cond, torch.zeros_like(cond)])  # (2B, 80, T)
        mask_in = torch.cat([mask, mask])  # (2B, 1, T)
        # One host sync per call (not per step) to take the bias-free attention path when possible.
        padded = not bool(mask.bool().all())
        for t, r in zip(t_span[:-1], t_span[1:]):
            v = estimator(
                torch.cat([x, x]), mask_in, mu_in, t.expand(2 * b), spks_in, cond_in, padded=padded
            )
            v_cond, v_uncond = v[:b], v[b:]
            v = (1.0 + self.cfg_rate) * v_cond - self.cfg_rate * v_uncond
            x = x + (r - t) * v
        return x.to(out_dtype)


class CFMDecoder(nn.Module):
    """The official `flow.decoder` (CausalConditionalCFM): the estimator plus a pluggable solver."""

    def __init__(self, cfg: EstimatorConfig = ESTIMATOR_FULL):
        super().__init__()
        self.estimator = ConditionalDecoder(cfg)

    def forward(
        self, z: Tensor, mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor, solver: Solver | None = None
    ) -> Tensor:
        """z, mu, cond: (B, 80, T); mask (B, 1, T); spks (B, 80) -> mel (B, 80, T)."""
        return (solver or EulerCFG())(self.estimator, z, mu, mask, spks, cond)
