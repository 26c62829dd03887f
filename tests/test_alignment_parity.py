"""The `official` guard profile decides exactly as the official AlignmentStreamAnalyzer.

Golden: tools/parity/alignment.py drove the unmodified official analyzer through attention
recorded from a tiny random-weight official T3 run and through synthetic sequences built to hit
every branch (progress, discontinuities at the jump limits, long tail, alignment repetition,
token repetition, short text, the shortest suppressing text, false start, disagreeing heads). It
recorded the logits `step` returned and the analyzer's state after each frame. The guard is fed
the same attention, tokens and logits; everything must be identical (the decisions are
thresholds on the same float operations, so there is no tolerance to grant).
"""

from __future__ import annotations


import pytest
import torch

from conftest import load_golden, run_generator
from nutq.engine.alignment import EOS_BIG, OFFICIAL, AlignmentGuard
from nutq.engine.generate import generate_speech_tokens
from nutq.engine.sampling import SamplingParams
from nutq.models.random_init import randomize_module
from nutq.models.t3 import T3, T3_TINY

CASES = ("t3", "progress", "jumps", "long_tail", "repetition", "token_rep", "short_text", "boundary",
         "false_start", "heads")


@pytest.fixture(scope="module")
def golden():
    g, meta = load_golden("alignment")
    assert tuple(meta["cases"]) == CASES, "fixture cases changed: update CASES"
    return g, meta


def frames(g: dict, case: str):
    """(attn (3, T, kv_len), fed token) per frame, as the analyzer's hooks saw them."""
    prefill, steps, tokens = g[f"in.{case}.prefill"], g[f"in.{case}.steps"], g[f"in.{case}.tokens"]
    L = prefill.shape[-1]
    yield prefill, int(tokens[0])
    for k in range(1, len(tokens)):
        yield steps[k - 1][:, None, :L + k], int(tokens[k])


def replay(g: dict, case: str, eos: int):
    span = tuple(g[f"in.{case}.span"].tolist())
    guard = AlignmentGuard(span, OFFICIAL)
    logits, pos, started, complete = [], [], [], []
    for k, (attn, tok) in enumerate(frames(g, case)):
        d = guard.observe(attn, tok)
        logits.append(AlignmentGuard.apply(g[f"in.{case}.logits"][k:k + 1], d, eos)[0])
        pos.append(d.text_position)
        started.append(guard.started)
        complete.append(guard.complete)
    return guard, torch.stack(logits), torch.tensor(pos), torch.tensor(started), torch.tensor(complete)


def assert_case_matches(g: dict, meta: dict, case: str):
    _, logits, pos, started, complete = replay(g, case, meta["eos"])
    ref_pos = g[f"out.{case}.position"]
    bad = (pos != ref_pos).nonzero().flatten().tolist()
    assert not bad, f"{case}: text position differs first at frame {bad[:1]}: {pos.tolist()} vs {ref_pos.tolist()}"
    assert torch.equal(started, g[f"out.{case}.started"]), f"{case}: false-start tracking differs"
    assert torch.equal(complete, g[f"out.{case}.complete"]), f"{case}: completion differs"
    ref = g[f"out.{case}.logits"]
    diff = (logits != ref).any(dim=1).nonzero().flatten().tolist()
    assert not diff, f"{case}: returned logits differ at frames {diff} (EOS suppress/force decisions)"


def test_golden_heads_are_the_guards(golden):
    assert [tuple(h) for h in golden[1]["heads"]] == list(OFFICIAL.heads)


@pytest.mark.parametrize("case", CASES)
def test_official_profile_matches_official_analyzer(golden, case):
    assert_case_matches(*golden, case)


def test_golden_cases_hit_every_branch(golden):
    """Guards the fixture itself: each branch the parity claims to cover must actually occur."""
    GOLDEN, META = golden
    counts = {case: replay(GOLDEN, case, META["eos"])[0].counts for case in META["cases"]}
    eos = META["eos"]
    suppressed = {c: int((GOLDEN[f"out.{c}.logits"][:, eos] == -EOS_BIG).sum()) for c in META["cases"]}
    assert counts["long_tail"]["forced_long_tail"] > 0
    assert counts["repetition"]["forced_alignment_repetition"] > 0
    assert counts["token_rep"]["forced_token_repetition"] > 0 and counts["t3"]["forced_token_repetition"] > 0
    assert counts["jumps"]["discontinuity"] >= 3 and counts["false_start"]["discontinuity"] > 0
    assert counts["false_start"]["false_start"] > 0 and GOLDEN["out.false_start.started"][-1]
    assert suppressed["short_text"] == 0 and suppressed["boundary"] > 0
    assert all(sum(v for k, v in counts[c].items() if k.startswith("forced_") and k != "forced_eos") == 0
               for c in ("progress", "short_text", "boundary", "heads")), "a clean case forced EOS"


def test_nutq_t3_loop_tracks_the_recorded_run(golden):
    """Same weights, conditioning and replayed tokens as the recorded official run: the probe
    heads' attention and the plain loop's text positions reproduce it."""
    g, META = golden
    model = randomize_module(T3(T3_TINY), META["seed"]).eval()
    cond = model.conditioning(g["in.t3.speaker"], g["in.t3.prompt"], 0.5)
    with torch.inference_mode():
        embeds = model.prefill_embeds(cond, g["in.t3.text"], cfg_rows=True)
        _, attn = model.forward_hidden(embeds, 0, model.new_cache(2, embeds.shape[1]), probes=OFFICIAL.heads)
    # fp32 on both sides; 1e-5 covers eager softmax(QK^T) vs our q·k probe summation order
    torch.testing.assert_close(attn, g["in.t3.prefill"], atol=1e-5, rtol=0)
    res = generate_speech_tokens(model, cond, g["in.t3.text"], SamplingParams(max_new_tokens=META["steps"]),
                                 forced_tokens=g["in.t3.forced"].tolist())
    assert [s.text_position for s in res.steps] == g["out.t3.position"].tolist()
    assert res.guard_counts["forced_token_repetition"] == 1


@pytest.mark.refenv
def test_live_official_analyzer(tmp_path):
    out = tmp_path / "alignment.safetensors"
    g, meta = run_generator("alignment.py", out, "--steps", "24", "--seed", "77")
    for case in meta["cases"]:
        assert_case_matches(g, meta, case)
