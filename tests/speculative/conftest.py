"""Tiny targets and drafts for the speculative tests. A package (`__init__.py`) so that this
conftest does not shadow the top-level `tests/conftest.py`."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nutq.engine.draft import DraftConfig, DraftT3
from nutq.models.random_init import randomize_module
from nutq.models.t3 import T3, T3_TINY


def prompt(t3: T3, seed: int, text_len: int):
    """(cond, text ids) of a random speaker, prompt and text."""
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        cond = t3.conditioning(torch.randn(1, 256, generator=g), torch.randint(0, 6561, (1, 12), generator=g), 0.5)
    return cond, torch.randint(1, 2000, (text_len,), generator=g)


@pytest.fixture(scope="package")
def t3() -> T3:
    """The tiny T3 (14 layers: it has the alignment heads the guard probes)."""
    return randomize_module(T3(T3_TINY), 0).eval()


@pytest.fixture(scope="package")
def small_t3() -> T3:
    """An even smaller target (2 layers) for the many-draws sampling tests (no guard)."""
    cfg = replace(T3_TINY, llama=replace(T3_TINY.llama, num_layers=2, num_heads=4, num_kv_heads=4, head_dim=16))
    return randomize_module(T3(cfg), 3).eval()


def random_draft(target: T3, layers: int, seed: int) -> DraftT3:
    """A draft with its own random layers: its proposals differ from the target's, so rounds see
    both acceptances and rejections."""
    d = DraftT3(target, DraftConfig(layers), init_from_target=False)
    return randomize_module(d, seed).eval()
