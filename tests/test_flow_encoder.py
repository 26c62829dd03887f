"""The S3Gen flow encoder equals the official `UpsampleConformerEncoder` (random weights, fp32).

Fixture: tests/golden/flow.safetensors from tools/parity/flow.py (`in.enc_*` / `out.enc_*`: a padded
batch of 2 through the official encoder at the tiny config). Tolerance 1e-4 max abs: both sides run
the same fp32 math in the same order (observed: bit-identical at tiny, ~1e-6 at full size).
"""

from __future__ import annotations

import re

import pytest
import torch

from conftest import load_golden
from nutq.models.random_init import randomize_module
from nutq.models.s3gen.flow_encoder import (
    FLOW_ENCODER_FULL,
    FLOW_ENCODER_TINY,
    RelPositionAttention,
    UpsampleConformerEncoder,
    rel_positional_encoding,
)
from nutq.models.s3gen.flow import FLOW_TINY, Flow


@pytest.fixture(scope="module")
def golden():
    return load_golden("flow")


@pytest.fixture(scope="module")
def tiny_encoder(golden):
    _, meta = golden
    # Randomized inside the Flow so tensor names (and thus the random draws) carry the `encoder.` prefix.
    flow = randomize_module(Flow(FLOW_TINY), meta["seed"]).eval()
    return flow.encoder


def test_full_state_dict_matches_official_listing(statedict_listing):
    official = statedict_listing("s3gen_flow_encoder.txt", strip_prefix="flow.encoder.")
    with torch.device("meta"):
        enc = UpsampleConformerEncoder(FLOW_ENCODER_FULL)
    ours = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    assert set(ours) == set(official), (
        f"missing {sorted(set(official) - set(ours))[:5]}, unexpected {sorted(set(ours) - set(official))[:5]}"
    )
    assert list(ours.items()) == list(official.items()), "same keys, but a shape or the order differs"


def test_tiny_has_the_full_key_structure():
    def pattern(cfg):
        with torch.device("meta"):
            keys = UpsampleConformerEncoder(cfg).state_dict().keys()
        return {re.sub(r"(?<=\.)\d+(?=\.)", "N", k) for k in keys}  # layer indices -> N

    assert pattern(FLOW_ENCODER_TINY) == pattern(FLOW_ENCODER_FULL)


def test_padded_batch_matches_official(golden, tiny_encoder):
    g, _ = golden
    with torch.inference_mode():
        h, mask = tiny_encoder(g["in.enc_x"], g["in.enc_len"])
    assert h.shape == g["out.enc_h"].shape == (2, 24, FLOW_ENCODER_TINY.d_model)
    assert torch.equal(mask, g["out.enc_mask"]), "frame mask must be 2 frames per valid token"
    assert mask.sum(-1).flatten().tolist() == [24, 18]
    err = (h - g["out.enc_h"]).abs().max().item()
    assert err <= 1e-4, f"encoder output differs from official by {err:.3g}"


def test_rel_shift_puts_relative_position_i_minus_j_at_query_i_key_j():
    t = 7
    # Column c of the (T, 2T-1) score row holds relative position T-1-c; fill it with that number.
    rel = torch.arange(t - 1, -t, -1, dtype=torch.float32).expand(2, 3, t, 2 * t - 1)
    shifted = RelPositionAttention.rel_shift(rel)
    i = torch.arange(t).view(t, 1)
    j = torch.arange(t).view(1, t)
    assert torch.equal(shifted, (i - j).float().expand(2, 3, t, t))


def test_rel_positional_encoding_is_centered_on_zero_offset():
    pe = rel_positional_encoding(5, 16)
    assert pe.shape == (1, 9, 16)
    centre = pe[0, 4]  # relative position 0: sin 0 = 0, cos 0 = 1
    assert torch.equal(centre[0::2], torch.zeros(8)) and torch.equal(centre[1::2], torch.ones(8))
    # +p and -p rows: sin is odd, cos even.
    assert torch.allclose(pe[0, 1, 0::2], -pe[0, 7, 0::2]) and torch.allclose(pe[0, 1, 1::2], pe[0, 7, 1::2])


def _explicit_attention(att: RelPositionAttention, x, pos_emb, key_mask):
    """The explicit form: (B, H, T, T) scores from both terms, masked softmax, weighted sum."""
    import math

    b, t, _ = x.shape
    q = att.linear_q(x).view(b, t, att.h, att.d_k)
    k = att.linear_k(x).view(b, t, att.h, att.d_k).transpose(1, 2)
    v = att.linear_v(x).view(b, t, att.h, att.d_k).transpose(1, 2)
    p = att.linear_pos(pos_emb).view(1, -1, att.h, att.d_k).transpose(1, 2)
    ac = (q + att.pos_bias_u).transpose(1, 2) @ k.transpose(-2, -1)
    bd = att.rel_shift((q + att.pos_bias_v).transpose(1, 2) @ p.transpose(-2, -1))
    pad = ~key_mask[:, None, None, :]
    w = ((ac + bd) / math.sqrt(att.d_k)).masked_fill(pad, float("-inf")).softmax(-1).masked_fill(pad, 0.0)
    return att.linear_out((w @ v).transpose(1, 2).reshape(b, t, -1))


def test_sdpa_attention_with_a_positional_bias_equals_the_explicit_scores():
    torch.manual_seed(0)
    att = randomize_module(RelPositionAttention(64, 4), 1).eval()
    t = 13
    x = torch.randn(3, t, 64)
    pos_emb = rel_positional_encoding(t, 64)
    key_mask = torch.arange(t)[None] < torch.tensor([[t], [7], [1]])  # full, padded, one key
    with torch.inference_mode():
        got, want = att(x, pos_emb, key_mask), _explicit_attention(att, x, pos_emb, key_mask)
    assert (got - want).abs().max().item() <= 1e-5
