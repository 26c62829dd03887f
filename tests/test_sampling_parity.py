"""The plain decode loop reproduces the official sampling distributions step by step.

Golden: tools/parity/t3.py records the exact distribution the official loop passed to
torch.multinomial at each of 20 steps (CFG 0.5, alignment analyzer, repetition penalty 2.0 with
BOS, temperature 0.8, min_p 0.05, top_p 1.0), with tokens replayed. Token 7 repeats token 6; the
analyzer sees fed-back tokens, so at step 8 it forces EOS: the guard must do the same.
"""

from __future__ import annotations

import torch

from conftest import load_golden
from nutq.engine.generate import generate_speech_tokens
from nutq.engine.sampling import SamplingParams
from nutq.models.random_init import randomize_module
from nutq.models.t3 import T3, T3_TINY


def test_distributions_match_official_loop():
    g, meta = load_golden("t3")
    model = randomize_module(T3(T3_TINY), meta["seed"]).eval()
    params = SamplingParams(cfg_weight=meta["cfg_weight"], temperature=meta["temperature"],
                            repetition_penalty=meta["repetition_penalty"], min_p=meta["min_p"],
                            top_p=meta["top_p"], max_new_tokens=meta["steps"])
    cond = model.conditioning(g["in.speaker"], g["in.prompt"], meta["emotion"])
    forced = g["in.forced"].tolist()
    res = generate_speech_tokens(model, cond, g["in.text"], params, forced_tokens=forced, record_probs=True)
    probs = torch.stack([s.probs for s in res.steps])
    ref = g["out.probs"]
    assert probs.shape == ref.shape
    # The support (tokens that survive min_p and the guard) must be identical at every step.
    assert torch.equal(probs > 0, ref > 0), "different tokens allowed by the filters"
    assert (probs - ref).abs().max() <= 1e-5
    # Forced EOS one step after the repeat, EOS suppressed elsewhere (text not consumed yet).
    eos = model.cfg.stop_speech
    assert ref[8, eos] == 1.0 and probs[8, eos] == 1.0
    assert (probs[[s for s in range(20) if s != 8], eos] == 0).all()
    assert res.guard_counts["forced_eos"] == 1


def test_seeded_sampling_is_reproducible_and_stops():
    model = randomize_module(T3(T3_TINY), 5).eval()
    cond = model.conditioning(torch.randn(1, 256), torch.randint(0, 6561, (1, 150)), 0.5)
    text = torch.tensor([255, 721, 30, 40, 50, 2, 60, 0])
    p = SamplingParams(max_new_tokens=30)
    a = generate_speech_tokens(model, cond, text, p, generator=torch.Generator().manual_seed(1))
    b = generate_speech_tokens(model, cond, text, p, generator=torch.Generator().manual_seed(1))
    assert a.tokens == b.tokens and len(a.steps) <= 30
    assert all(0 <= t < 6561 for t in a.tokens)
    greedy = generate_speech_tokens(model, cond, text, SamplingParams(max_new_tokens=10, greedy=True, temperature=0))
    assert len(greedy.steps) >= 1
