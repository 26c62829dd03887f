"""T3 equals the official chatterbox-tts 0.1.7 T3 (random weights, fp32).

Fixture: tests/golden/t3.safetensors from tools/parity/t3.py (official T3.inference with CFG,
replayed tokens). Tolerances: conditioning 1e-5 and logits 1e-4 max abs; both sides run the same
fp32 math, differences come only from kernel summation order (observed ~1e-6).
"""

from __future__ import annotations

import pytest
import torch

from conftest import load_golden, run_generator
from nutq.models.random_init import randomize_module
from nutq.models.t3 import T3, T3_FULL, T3_TINY


def run_nutq(model: T3, g: dict, steps: int):
    """Prefill + `steps` replayed tokens through a static KV cache; returns (cond, logits)."""
    with torch.inference_mode():
        cond = model.conditioning(g["in.speaker"], g["in.prompt"], 0.5)
        embeds = model.prefill_embeds(cond, g["in.text"])
        cache = model.new_cache(batch=2, max_len=embeds.shape[1] + steps + 1)
        h = model.forward_hidden(embeds, 0, cache)
        logits = [model.speech_logits(h[:, -1])]
        pos = embeds.shape[1]
        for k, tok in enumerate(g["in.forced"][:steps].tolist()):
            e = model.embed_speech(torch.tensor([[tok]]), torch.tensor([k + 1])).expand(2, -1, -1)
            h = model.forward_hidden(e, pos + k, cache)
            logits.append(model.speech_logits(h[:, -1]))
    return cond, torch.stack(logits)


def check(model: T3, g: dict, meta: dict, logit_tol: float):
    cond, logits = run_nutq(model, g, meta["steps"])
    assert cond.shape == g["out.cond"].shape == (1, model.cfg.len_cond, model.cfg.dim)
    assert (cond - g["out.cond"]).abs().max() <= 1e-5
    ref = g["out.logits"]
    assert logits.shape == ref.shape  # (steps+1, 2, V)
    err = (logits - ref).abs().amax(dim=(1, 2))
    assert err.max() <= logit_tol, f"per-step max abs logit diff: {err.tolist()}"
    # The uncond row must differ from the cond row (text zeroed), or CFG would be a no-op.
    assert (ref[:, 0] - ref[:, 1]).abs().max() > 1e-3


def test_t3_tiny_matches_official():
    g, meta = load_golden("t3")
    assert meta["size"] == "tiny"
    model = randomize_module(T3(T3_TINY), meta["seed"]).eval()
    check(model, g, meta, 1e-4)


def test_t3_full_statedict_matches_official_listing(statedict_listing):
    with torch.device("meta"):
        model = T3(T3_FULL)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == statedict_listing("t3_mtl23ls_v2.txt")


def test_cache_overflow_is_a_clear_error():
    model = T3(T3_TINY).eval()
    cache = model.new_cache(batch=2, max_len=4)
    with pytest.raises(ValueError, match="cannot hold position"):
        model.forward_hidden(torch.zeros(2, 5, model.cfg.dim), 0, cache)


@pytest.mark.slow
@pytest.mark.refenv
def test_t3_full_size_matches_official(tmp_path):
    out = tmp_path / "t3_full.safetensors"
    g, meta = run_generator("t3.py", out, "--size", "full", "--steps", "20")
    model = randomize_module(T3(T3_FULL), meta["seed"]).eval()
    check(model, g, meta, 1e-4)
