"""The CFM estimator (U-Net `ConditionalDecoder`) equals the official one (random weights, fp32).

Fixture: tests/golden/flow.safetensors (`in.est_*` / `out.est`): one official estimator call on a
batch of 2 at different flow times, the second row padded to 17 of 24 frames. Tolerance 1e-4 max
abs; both sides use `scaled_dot_product_attention` with the same additive padding bias (observed:
bit-identical at tiny, 0 at full size too).
"""

from __future__ import annotations

import re

import pytest
import torch

from conftest import load_golden
from nutq.models.random_init import randomize_module
from nutq.models.s3gen.estimator import ESTIMATOR_FULL, ESTIMATOR_TINY, ConditionalDecoder
from nutq.models.s3gen.flow import FLOW_TINY, Flow


@pytest.fixture(scope="module")
def golden():
    return load_golden("flow")


@pytest.fixture(scope="module")
def estimator(golden):
    _, meta = golden
    return randomize_module(Flow(FLOW_TINY), meta["seed"]).eval().decoder.estimator


def est_inputs(g: dict) -> dict:
    return {k[len("in.est_"):]: v for k, v in g.items() if k.startswith("in.est_")}


def test_full_state_dict_matches_official_listing(statedict_listing):
    official = statedict_listing("s3gen_flow_decoder_estimator.txt", strip_prefix="flow.decoder.estimator.")
    with torch.device("meta"):
        est = ConditionalDecoder(ESTIMATOR_FULL)
    ours = {k: tuple(v.shape) for k, v in est.state_dict().items()}
    assert set(ours) == set(official), (
        f"missing {sorted(set(official) - set(ours))[:5]}, unexpected {sorted(set(ours) - set(official))[:5]}"
    )
    assert list(ours.items()) == list(official.items()), "same keys, but a shape or the order differs"
    n_blocks = sum(k.endswith("attn1.to_q.weight") for k in ours)
    assert n_blocks == 56, "the official estimator has 56 transformer blocks"


def test_tiny_has_the_full_key_structure():
    def pattern(cfg):
        with torch.device("meta"):
            keys = ConditionalDecoder(cfg).state_dict().keys()
        return {re.sub(r"(?<=\.)\d+(?=\.)", "N", k) for k in keys}  # layer indices -> N

    assert pattern(ESTIMATOR_TINY) == pattern(ESTIMATOR_FULL)


def test_padded_batch_matches_official(golden, estimator):
    g, _ = golden
    with torch.inference_mode():
        out = estimator(**est_inputs(g))
    assert out.shape == g["out.est"].shape == (2, 80, 24)
    err = (out - g["out.est"]).abs().max().item()
    assert err <= 1e-4, f"estimator output differs from official by {err:.3g}"
    assert torch.equal(out[1, :, 17:], torch.zeros(80, 7)), "padded frames must come out as zeros"


def test_padded_frames_do_not_change_valid_frames(golden, estimator):
    """Right padding is invisible: causal convs look left only, attention hides padded keys."""
    g, _ = golden
    inp = est_inputs(g)
    row = {k: v[1:2] for k, v in inp.items()}
    trimmed = {k: (v[..., :17] if v.dim() == 3 else v) for k, v in row.items()}
    garbage = dict(row, x=row["x"].clone(), mu=row["mu"].clone())
    garbage["x"][..., 17:] = 1e3
    garbage["mu"][..., 17:] = -1e3
    with torch.inference_mode():
        ref = estimator(**trimmed)
        out = estimator(**garbage)
    assert (out[..., :17] - ref).abs().max() <= 1e-5


def test_unpadded_fast_path_equals_masked_path(golden, estimator):
    g, _ = golden
    inp = dict(est_inputs(g), mask=torch.ones(2, 1, 24))
    with torch.inference_mode():
        masked = estimator(**inp)
        fast = estimator(**inp, padded=False)
    assert (masked - fast).abs().max() <= 1e-5
