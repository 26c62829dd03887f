"""HiFT's weight norm, folded once at load, gives the same audio as the parametrized module."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import parametrize

from nutq.models.loading import load_module
from nutq.models.random_init import randomize_module
from nutq.models.s3gen.hift import TINY, HiFTGenerator


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_folded_weight_norm_equals_the_parametrized_module(dtype):
    cfg = TINY
    ref = randomize_module(HiFTGenerator(cfg), 3, keep_suffixes=("window",)).eval()
    folded = load_module(lambda: HiFTGenerator(cfg), ref.state_dict(), dtype=dtype)
    assert not any(parametrize.is_parametrized(m) for m in folded.modules())
    assert any(parametrize.is_parametrized(m) for m in ref.modules())
    if dtype is not None:  # the parametrized reference in the same dtype (norm computed in it)
        ref = ref.to(dtype)
    mel = torch.randn(1, 80, 12, generator=torch.Generator().manual_seed(0)) - 4.0
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    with torch.inference_mode():
        want, _ = ref.inference(mel, generator=g())
        got, _ = folded.inference(mel, generator=g())
    assert torch.equal(got, want)
