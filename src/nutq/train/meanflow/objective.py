"""The JVP-free interval loss (IntMeanFlow, arXiv 2510.07979; SplitMeanFlow, arXiv 2507.16884).

For a pair of times t <= r the student predicts the average velocity u(z_t, t, r) and learns the
teacher's ū(t, r) = (z_r − z_t)/(r − t) read off the teacher's path (`teacher.TeacherPath`); r = t
is the instantaneous case, whose target is v_T. No Jacobian-vector product is needed: the teacher's
integration supplies what the MeanFlow identity would differentiate.

Which pairs (`PairSampler`, seeded by its own generator so resumes replay it):
- the deployed intervals, [k/n, (k+1)/n] of every step count n the student will run (2 and 1 by
  default: [0, .5], [.5, 1], [0, 1]); the step count is drawn uniformly, then the interval;
- r = t at a knot of the teacher's grid (flow matching on the guided field, which anchors u at
  short intervals);
- otherwise two logit-normal times, sorted (the density SD3-style flow models train on; it favours
  the middle, where the solver's error builds up).

The loss is MSE masked to the generated frames (not the prompt, not padding), averaged per
generated value. The optional interval-consistency term asks (r−t)·u(z_t,t,r) to equal
(s−t)·u(z_t,t,s) + (r−s)·u(z_s,s,r) with z_s = z_t + (s−t)·u(z_t,t,s), the right side from the
student itself without gradient (SplitMeanFlow's interval splitting).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .inputs import FlowInputs

__all__ = ["PairConfig", "PairSampler", "masked_mse", "student_forward", "consistency_target"]


@dataclass(frozen=True)
class PairConfig:
    steps: tuple[int, ...] = (2, 1)  # the step counts whose intervals are oversampled
    p_deployed: float = 0.5
    p_equal: float = 0.1
    logit_mean: float = 0.0
    logit_std: float = 1.0

    def __post_init__(self):
        if not self.steps or any(int(n) != n or n < 1 for n in self.steps):
            raise ValueError(f"steps must be positive integers, got {self.steps!r}")
        if not (0 <= self.p_deployed and 0 <= self.p_equal and self.p_deployed + self.p_equal <= 1):
            raise ValueError("p_deployed and p_equal must be >= 0 with a sum <= 1")
        if self.logit_std <= 0:
            raise ValueError("logit_std must be > 0")


class PairSampler:
    """(t, r, kind) for n rows; kind 0 deployed, 1 r = t at a knot, 2 logit-normal."""

    def __init__(self, cfg: PairConfig, grid: Tensor, seed: int):
        self.cfg = cfg
        self.grid = grid.detach().cpu().float()
        self.gen = torch.Generator().manual_seed(seed)
        self.intervals = torch.tensor([[k / n, (k + 1) / n] for n in cfg.steps for k in range(n)])
        self.interval_weights = torch.tensor([1.0 / n for n in cfg.steps for _ in range(n)])

    def state(self) -> Tensor:
        return self.gen.get_state()

    def set_state(self, s: Tensor) -> None:
        self.gen.set_state(s)

    def __call__(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        c, g = self.cfg, self.gen
        u = torch.rand(n, generator=g)
        kind = torch.where(u < c.p_deployed, 0, torch.where(u < c.p_deployed + c.p_equal, 1, 2))
        dep = self.intervals[torch.multinomial(self.interval_weights, n, replacement=True, generator=g)]
        knot = self.grid[torch.randint(0, self.grid.numel() - 1, (n,), generator=g)]
        a, b = torch.sigmoid(torch.randn(2, n, generator=g) * c.logit_std + c.logit_mean)
        t = torch.where(kind == 0, dep[:, 0], torch.where(kind == 1, knot, torch.minimum(a, b)))
        r = torch.where(kind == 0, dep[:, 1], torch.where(kind == 1, knot, torch.maximum(a, b)))
        return t, r, kind


def masked_mse(pred: Tensor, target: Tensor, generated: Tensor) -> Tensor:
    """Mean squared error over the generated frames only: pred/target (R, 80, T), generated (R, 1, T)."""
    w = generated.to(pred.dtype)
    denom = (w.sum() * pred.size(1)).clamp_min(1.0)
    return ((pred.float() - target.float()) ** 2 * w).sum() / denom


def student_forward(student, z_t: Tensor, t: Tensor, r: Tensor, fi: FlowInputs) -> Tensor:
    """u(z_t, t, r) for rows whose inputs are `fi` (already expanded to the rows)."""
    return student(z_t, fi.mask, fi.mu, t, fi.spks, fi.cond, r=r, padded=True)


@torch.no_grad()
def consistency_target(student, z_t: Tensor, t: Tensor, r: Tensor, fi: FlowInputs, gen: torch.Generator) -> Tensor:
    """((s−t)·u(z_t,t,s) + (r−s)·u(z_s,s,r)) / (r−t) for s drawn in the middle 60 % of [t, r]."""
    frac = 0.2 + 0.6 * torch.rand(t.shape, generator=gen).to(t.device)
    s = t + frac * (r - t)
    u1 = student_forward(student, z_t, t, s, fi)
    z_s = z_t + (s - t).view(-1, 1, 1) * u1
    u2 = student_forward(student, z_s, s, r, fi)
    span = (r - t).clamp_min(1e-6).view(-1, 1, 1)
    return ((s - t).view(-1, 1, 1) * u1 + (r - s).view(-1, 1, 1) * u2) / span
