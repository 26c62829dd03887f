"""Which S3Gen decoder turns speech tokens into mel, and how it is integrated.

Two decoders decode the same 6561 S3 speech tokens:

- `cfm`: the multilingual checkpoint's own flow (`s3gen.pt`), 10 Euler steps on a cosine grid with
  classifier-free guidance (two estimator rows per item). This is the official output.
  `cfg_rate=0` drops the unconditional row (half the estimator work, a different sound: no
  guidance); fewer steps trade fidelity for speed the same way.
- `meanflow`: Resemble's distilled decoder (`s3gen_meanflow.safetensors`, from the Turbo model
  repository), 2 steps on a linear grid, no CFG: about 10x less estimator work than `cfm`. It was
  distilled by Resemble on their data; how it sounds on Arabic is unmeasured until an evaluation
  with the real weights. One step works too, with some loss of high frequencies.

`FlowOptions` is the one user-facing choice; `solver()` gives the model-level solver and
`schedule()` the streaming chunk schedule chosen for the decoder's cost (see `nutq.engine.chunking`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .chunking import CFM_SCHEDULE, MEANFLOW_SCHEDULE, ChunkSchedule

if TYPE_CHECKING:
    from ..models.s3gen.cfm import Solver

__all__ = ["FlowOptions", "KINDS", "parse_flow"]

KINDS = ("cfm", "meanflow")
MAX_STEPS = 100  # more is never useful and would let a request hold the GPU for minutes


@dataclass(frozen=True)
class FlowOptions:
    """kind: "cfm" (official 10-step) or "meanflow" (distilled 2-step); steps / cfg_rate: None
    takes the decoder's own default (10 and 0.7 for cfm, 2 and 0 for meanflow)."""

    kind: str = "cfm"
    steps: int | None = None
    cfg_rate: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"flow kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.steps is not None:
            if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
                raise ValueError(f"flow steps must be an int in [1, {MAX_STEPS}], got {self.steps!r}")
        if self.cfg_rate is not None:
            c = self.cfg_rate
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
                raise ValueError(f"flow cfg_rate must be a finite number >= 0, got {c!r}")
            if self.kind == "meanflow" and c != 0:
                # The distilled decoder learned the guided field; guiding it again has no official
                # meaning and doubles its cost, so it is refused rather than silently ignored.
                raise ValueError("the meanflow decoder runs without CFG (it was distilled from guided "
                                 f"outputs): cfg_rate must be 0 or unset, got {c!r}")

    @property
    def meanflow(self) -> bool:
        return self.kind == "meanflow"

    def solver(self) -> Solver:
        """The decoder's official solver (the solvers' own defaults), with `steps` / `cfg_rate` set."""
        # The solvers live with the model (torch); importing them here keeps the CLI's parsers,
        # which only name flow kinds, free of torch (`nutq --help`).
        from ..models.s3gen.cfm import EulerCFG, MeanFlowEuler

        if self.meanflow:
            return MeanFlowEuler() if self.steps is None else MeanFlowEuler(self.steps)
        base = EulerCFG()
        return replace(base, n_timesteps=base.n_timesteps if self.steps is None else self.steps,
                       cfg_rate=base.cfg_rate if self.cfg_rate is None else float(self.cfg_rate))

    def schedule(self) -> ChunkSchedule:
        """The default streaming chunk schedule for this decoder (its cost per render differs)."""
        return MEANFLOW_SCHEDULE if self.meanflow else CFM_SCHEDULE

    @property
    def label(self) -> str:
        """A short name for logs and benchmark tables, e.g. "cfm-10", "cfm-10-cfg0", "meanflow-2"."""
        from ..models.s3gen.cfm import EulerCFG

        solver = self.solver()
        s = f"{self.kind}-{solver.n_timesteps}"
        if not self.meanflow and solver.cfg_rate != EulerCFG().cfg_rate:
            s += f"-cfg{solver.cfg_rate:g}"
        return s


def parse_flow(flow: "FlowOptions | str | None") -> FlowOptions:
    """A FlowOptions from an object, a kind name or None (the official cfm decoder)."""
    if isinstance(flow, FlowOptions):
        return flow
    if flow is not None and not isinstance(flow, str):
        raise TypeError(f"flow must be a FlowOptions, a kind name ({', '.join(KINDS)}) or None, got {type(flow).__name__}")
    return FlowOptions(flow or "cfm")
