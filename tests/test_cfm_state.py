"""The flow solvers keep their Euler state in fp32 when the estimator runs in bf16.

A fake estimator returns a small constant velocity in bf16: added to a bf16 state near 1 every
step, each update would round away (bf16 spacing at 1 is 2^-7); an fp32 state integrates it.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from nutq.models.s3gen.cfm import EulerCFG, MeanFlowEuler

V = 1e-3  # the constant velocity: x moves by V over t in [0, 1]


class _Const:
    def __init__(self, meanflow: bool):
        self.dtype, self.cfg = torch.bfloat16, SimpleNamespace(meanflow=meanflow)
        self.inputs: list[torch.dtype] = []

    def __call__(self, x, mask, mu, t, spks, cond, r=None, padded=False):
        self.inputs.append(x.dtype)
        return torch.full_like(x, V)


@pytest.mark.parametrize("solver", [EulerCFG(10), EulerCFG(10, cfg_rate=0.0), MeanFlowEuler(4)],
                         ids=["cfg", "unguided", "meanflow"])
def test_euler_state_stays_fp32_with_a_bf16_estimator(solver):
    est = _Const(isinstance(solver, MeanFlowEuler))
    z = torch.ones(1, 80, 6)
    mu, cond, mask, spks = torch.zeros(1, 80, 6), torch.zeros(1, 80, 6), torch.ones(1, 1, 6), torch.zeros(1, 80)
    out = solver(est, z, mu, mask, spks, cond)
    assert set(est.inputs) == {torch.bfloat16} and out.dtype == torch.float32
    # (1 + cfg)·V - cfg·V = V whatever the guidance
    assert torch.allclose(out, torch.full_like(out, 1.0 + V), atol=1e-6)
