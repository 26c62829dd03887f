"""The teacher: the multilingual S3Gen flow with classifier-free guidance, and its noise path.

The guided velocity is the one `EulerCFG` integrates, v_T = (1 + w)·v(x, t | c) − w·v(x, t | ∅) with
w = 0.7, the unconditional rows zeroing mu, the speaker input and the prompt condition, both rows in
one estimator call. Integrated by Euler on the official cosine grid (10 steps), it is the decoder
inference runs.

The teacher's path from a noise z_0 is its Euler trajectory on that grid: the states at the grid
knots, and straight segments between them (that is what Euler computes). Every distillation target
is read off this one path: z_t and z_r are points on it, and ū(t, r) = (z_r − z_t)/(r − t) is the
teacher integrated from t to r with its own sub-steps, as many as its grid has inside [t, r]
(so their number grows with r − t, measured on the teacher's cosine clock). Two properties follow
and are tested: the [0, 1] target is exactly the 10-step teacher's output, and at a knot the r = t
target is v_T itself. A path costs the teacher's 10 guided calls once per (example, noise); any
number of (t, r) pairs then cost nothing more, and paths can be cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from nutq.models.s3gen.cfm import cosine_time_grid

from .inputs import FlowInputs

__all__ = ["guided_velocity", "guided_euler", "TeacherPath", "teacher_path", "load_teacher", "CFG_RATE"]

CFG_RATE = 0.7  # the official `inference_cfg_rate`


def guided_velocity(estimator, x: Tensor, t: Tensor, fi: FlowInputs, cfg_rate: float = CFG_RATE,
                    padded: bool = True) -> Tensor:
    """v_T at (x, t): x (B, 80, T), t a scalar tensor; one estimator call of batch 2B as `EulerCFG`."""
    b = x.size(0)
    if cfg_rate == 0:
        return estimator(x, fi.mask, fi.mu, t.expand(b), fi.spks, fi.cond, padded=padded)
    v = estimator(torch.cat([x, x]), torch.cat([fi.mask, fi.mask]), torch.cat([fi.mu, torch.zeros_like(fi.mu)]),
                  t.expand(2 * b), torch.cat([fi.spks, torch.zeros_like(fi.spks)]),
                  torch.cat([fi.cond, torch.zeros_like(fi.cond)]), padded=padded)
    return (1.0 + cfg_rate) * v[:b] - cfg_rate * v[b:]


@torch.no_grad()
def guided_euler(estimator, z: Tensor, fi: FlowInputs, grid: Tensor, cfg_rate: float = CFG_RATE) -> Tensor:
    """Euler on `grid` (K+1,) from z: the states at every knot, (K+1, B, 80, T), z first.

    `grid = cosine_time_grid(10)` gives, last, what `EulerCFG()` returns (tested bit for bit); the
    naive few-step baselines of the evaluation are this on 2- and 1-step grids."""
    padded = not bool(fi.mask.bool().all())
    x = z.to(estimator.dtype)
    states = [x]
    for t, r in zip(grid[:-1], grid[1:]):
        x = x + (r - t) * guided_velocity(estimator, x, t, fi, cfg_rate, padded)
        states.append(x)
    return torch.stack(states)


@dataclass(frozen=True)
class TeacherPath:
    """A batch of teacher trajectories: states (K+1, B, 80, T) at knots `grid` (K+1,)."""

    grid: Tensor
    states: Tensor

    @property
    def n_steps(self) -> int:
        return self.grid.numel() - 1

    def at(self, t: Tensor, rows: Tensor) -> Tensor:
        """z_t for rows `rows` (R,) at times t (R,): (R, 80, T), exact at the knots."""
        g = self.grid.to(t.device)
        k = (torch.searchsorted(g, t.contiguous(), right=True) - 1).clamp(0, self.n_steps - 1)
        f = ((t - g[k]) / (g[k + 1] - g[k])).to(self.states.dtype).view(-1, 1, 1)
        # (1 - f)·a + f·b rather than a + f·(b - a): exactly a at f = 0 and exactly b at f = 1.
        return (1 - f) * self.states[k, rows] + f * self.states[k + 1, rows]

    def targets(self, t: Tensor, r: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(z_t, ū(t, r)) for each row. ū = (z_r − z_t)/(r − t); where r = t (t must then be a
        knot) the slope of the segment starting there, i.e. the teacher's v_T at (z_t, t)."""
        z_t = self.at(t, rows)
        equal = r <= t
        if bool(equal.any()):
            g = self.grid.to(t.device)
            k = torch.searchsorted(g, t.contiguous()).clamp(0, self.n_steps - 1)
            off_knot = equal & ((g[k] - t).abs() > 1e-6)
            if bool(off_knot.any()):
                raise ValueError("r = t pairs must sit on the teacher's grid knots")
            r_eff = torch.where(equal, g[k + 1], r)
        else:
            r_eff = r
        z_r = self.at(r_eff, rows)
        u = (z_r - z_t) / (r_eff - t).to(z_t.dtype).view(-1, 1, 1)
        return z_t, u


def teacher_path(estimator, z: Tensor, fi: FlowInputs, n_steps: int = 10, cfg_rate: float = CFG_RATE) -> TeacherPath:
    """The teacher's trajectories from noise z (B, 80, T) on its cosine grid."""
    grid = cosine_time_grid(n_steps, device=z.device)
    return TeacherPath(grid, guided_euler(estimator, z, fi, grid, cfg_rate))


def load_teacher(model_dir, device="cpu"):
    """The checkpoint's S3Gen (`s3gen.pt`, loaded strictly), frozen, in eval mode."""
    from nutq.checkpoints.files import resolve
    from nutq.models.registry import configs_from_sidecar, load_component

    files = resolve(model_dir, allow_download=False)
    s3gen = load_component(files.root, "s3gen", configs_from_sidecar(files.sidecar)["s3gen"], device=device)
    return s3gen.eval().requires_grad_(False)
