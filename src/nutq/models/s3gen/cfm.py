"""ODE solvers that turn noise into a mel with the flow estimator.

A solver is any callable `(estimator, z, mu, mask, spks, cond) -> mel`. The official multilingual
model uses `EulerCFG` (10 Euler steps on a cosine time grid, classifier-free guidance with the
conditional and unconditional rows in one batch of 2B; `cfg_rate=0` drops the unconditional rows,
which halves the work and gives what the official solver computes with `inference_cfg_rate=0`).
The distilled decoder uses `MeanFlowEuler` (2 steps on a linear grid, no CFG). Solvers are frozen
dataclasses: equal solvers compare equal, so batched callers can group renders by solver.

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

__all__ = ["Solver", "EulerCFG", "MeanFlowEuler", "CFMDecoder", "cosine_time_grid", "linear_time_grid"]


class Solver(Protocol):
    def __call__(
        self, estimator: ConditionalDecoder, z: Tensor, mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor
    ) -> Tensor: ...


def cosine_time_grid(n_steps: int, device=None, dtype=torch.float32) -> Tensor:
    """t_k = 1 - cos(k/n * pi/2), k = 0..n: small steps near the noise end, large near the data end."""
    t = torch.linspace(0, 1, n_steps + 1, device=device, dtype=dtype)
    return 1 - torch.cos(t * 0.5 * math.pi)


def linear_time_grid(n_steps: int, device=None, dtype=torch.float32) -> Tensor:
    """t_k = k/n, k = 0..n (the meanflow grid: 0, 0.5, 1 for two steps)."""
    return torch.linspace(0, 1, n_steps + 1, device=device, dtype=dtype)


def _check_steps(name: str, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name}.n_timesteps must be an int >= 1, got {n!r}")


@dataclass(frozen=True)
class EulerCFG:
    """Euler integration of dx/dt = (1+r)·v(x, cond) - r·v(x, no cond) on a cosine grid.

    The unconditional row zeroes mu, spks and cond (x, mask and t are shared). Both rows run in one
    estimator call of batch 2B, conditional rows first, as the official solver does.
    """

    n_timesteps: int = 10
    cfg_rate: float = 0.7

    def __post_init__(self):
        _check_steps("EulerCFG", self.n_timesteps)
        if isinstance(self.cfg_rate, bool) or not isinstance(self.cfg_rate, (int, float)) \
                or not math.isfinite(self.cfg_rate) or self.cfg_rate < 0:
            raise ValueError(f"EulerCFG.cfg_rate must be a finite number >= 0, got {self.cfg_rate!r}")

    def __call__(
        self, estimator: ConditionalDecoder, z: Tensor, mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor
    ) -> Tensor:
        if estimator.cfg.meanflow:
            raise ValueError("EulerCFG drives the 10-step decoder; the meanflow estimator needs MeanFlowEuler")
        if self.cfg_rate == 0:
            return self._unguided(estimator, z, mu, mask, spks, cond)
        out_dtype = z.dtype
        dt_ = estimator.dtype
        # The time grid stays fp32 even for a bf16/fp16 estimator (the official code casts it, which
        # only loses precision); in fp32 the two agree exactly.
        t_span = cosine_time_grid(self.n_timesteps, device=mu.device)
        # The Euler state stays fp32 whatever the estimator's dtype: ten bf16 additions of small
        # steps would round each update away. Only the estimator's inputs are cast.
        x = z.float()
        mu, mask, spks, cond = (v.to(dt_) for v in (mu, mask, spks, cond))
        b = x.size(0)
        # Per-call constants of the 2B batch: [conditional rows; unconditional rows].
        mu_in = torch.cat([mu, torch.zeros_like(mu)])  # (2B, 80, T)
        spks_in = torch.cat([spks, torch.zeros_like(spks)])  # (2B, 80)
        cond_in = torch.cat([cond, torch.zeros_like(cond)])  # (2B, 80, T)
        mask_in = torch.cat([mask, mask])  # (2B, 1, T)
        # One host sync per call (not per step) to take the bias-free attention path when possible.
        padded = not bool(mask.bool().all())
        for t, r in zip(t_span[:-1], t_span[1:]):
            xe = x.to(dt_)
            v = estimator(
                torch.cat([xe, xe]), mask_in, mu_in, t.expand(2 * b), spks_in, cond_in, padded=padded
            ).float()
            v_cond, v_uncond = v[:b], v[b:]
            v = (1.0 + self.cfg_rate) * v_cond - self.cfg_rate * v_uncond
            x = x + (r - t) * v
        return x.to(out_dtype)

    def _unguided(self, estimator, z, mu, mask, spks, cond) -> Tensor:
        """cfg_rate 0: (1 + 0)·v_cond - 0·v_uncond is v_cond, so the unconditional rows are not run."""
        out_dtype = z.dtype
        t_span = cosine_time_grid(self.n_timesteps, device=mu.device)
        dt_ = estimator.dtype
        x = z.float()  # fp32 Euler state, as in __call__
        mu, mask, spks, cond = (v.to(dt_) for v in (mu, mask, spks, cond))
        padded = not bool(mask.bool().all())
        for t, r in zip(t_span[:-1], t_span[1:]):
            x = x + (r - t) * estimator(x.to(dt_), mask, mu, t.expand(x.size(0)), spks, cond, padded=padded).float()
        return x.to(out_dtype)


@dataclass(frozen=True)
class MeanFlowEuler:
    """The distilled decoder's solver: x <- x + (r - t)·u(x, t, r) on a linear grid, batch B.

    u is the average velocity over [t, r] that the meanflow estimator predicts. There is no CFG: the
    decoder was distilled from guided outputs, so one conditional row per item is the whole call.
    """

    n_timesteps: int = 2

    def __post_init__(self):
        _check_steps("MeanFlowEuler", self.n_timesteps)

    def __call__(
        self, estimator: ConditionalDecoder, z: Tensor, mu: Tensor, mask: Tensor, spks: Tensor, cond: Tensor
    ) -> Tensor:
        if not estimator.cfg.meanflow:
            raise ValueError("MeanFlowEuler needs the meanflow estimator (s3gen_meanflow.safetensors)")
        out_dtype = z.dtype
        # fp32 grid, as in EulerCFG: k/n for n = 1, 2, 4 is exact in every dtype anyway.
        t_span = linear_time_grid(self.n_timesteps, device=mu.device)
        dt_ = estimator.dtype
        x = z.float()  # fp32 Euler state, as in EulerCFG
        mu, mask, spks, cond = (v.to(dt_) for v in (mu, mask, spks, cond))
        b = x.size(0)
        padded = not bool(mask.bool().all())
        for t, r in zip(t_span[:-1], t_span[1:]):
            u = estimator(x.to(dt_), mask, mu, t.expand(b), spks, cond, r=r.expand(b), padded=padded).float()
            x = x + (r - t) * u
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
