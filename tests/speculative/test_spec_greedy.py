"""Greedy speculative decoding emits exactly the plain loop's tokens (guard on and off, drafts
good and bad), and the target's KV cache after rounds with rejections equals a plain run's."""

from __future__ import annotations

import pytest
import torch

from nutq.engine.alignment import ARABIC, OFFICIAL
from nutq.engine.decode import decode_step, prefill
from nutq.engine.draft import DraftConfig, DraftT3
from nutq.engine.generate import generate_speech_tokens, iter_speech_tokens
from nutq.engine.sampling import SamplingParams
from nutq.engine.speculative import SpecConfig, SpecStats, iter_speech_tokens_speculative

from .conftest import prompt, random_draft

GREEDY = SamplingParams(greedy=True, max_new_tokens=32)


def spec_tokens(t3, cond, text, params, spec, guard, **kw):
    return [s.token for s in iter_speech_tokens_speculative(t3, cond, text, params, spec, guard=guard, **kw)]


@pytest.mark.parametrize("guard", [None, OFFICIAL, ARABIC], ids=["no-guard", "official", "arabic"])
def test_greedy_equals_plain_loop(t3, guard):
    # draft = target (all accepted), a random draft (mostly rejected), the target's first layers
    drafts = (("target", "target", 4), ("random", random_draft(t3, 2, 7), 3), ("shortcut", DraftT3(t3, DraftConfig(3)), 2))
    for seed, n in ((1, 5), (3, 17)):
        cond, text = prompt(t3, seed, n)
        want = [s.token for s in generate_speech_tokens(t3, cond, text, GREEDY, guard=guard).steps]
        for name, draft, k in drafts:
            st = SpecStats()
            got = spec_tokens(t3, cond, text, GREEDY, SpecConfig(k=k, draft=draft, adaptive=False), guard, spec_stats=st)
            assert got == want, (seed, name)
            if name == "target":
                assert st.acceptance_rate == 1.0
            assert st.emitted == len(want) - 1  # every token after the prefill's comes from a round


def test_guard_counts_match_plain_loop(t3):
    cond, text = prompt(t3, 4, 9)
    plain_stats, spec_stats = {}, {}
    want = [s.token for s in iter_speech_tokens(t3, cond, text, GREEDY, guard=OFFICIAL, stats=plain_stats)]
    got = spec_tokens(t3, cond, text, GREEDY, SpecConfig(k=4, draft=random_draft(t3, 1, 9)), OFFICIAL, stats=spec_stats)
    assert got == want
    assert spec_stats == plain_stats and sum(plain_stats.values()) > 0


def test_kv_cache_equals_plain_run_after_rejections(t3):
    """Sampling with a bad draft (many rejections): at every position the accepted tokens were fed,
    the cache holds what a plain run feeding the same tokens holds."""
    cond, text = prompt(t3, 5, 9)
    params = SamplingParams(max_new_tokens=40, ignore_eos=True)
    st, box = SpecStats(), []
    g = torch.Generator().manual_seed(0)
    toks = spec_tokens(t3, cond, text, params, SpecConfig(k=4, draft=random_draft(t3, 2, 11), adaptive=False), None,
                       generator=g, accept_generator=torch.Generator().manual_seed(1), spec_stats=st, cache_out=box)
    assert st.drafted - st.accepted >= 5  # rejections did happen
    cache, L = box
    ref = t3.new_cache(batch=2, max_len=cache.max_len)
    _, _, L2 = prefill(t3, cond, text, ref)
    assert L2 == L
    for j, tok in enumerate(toks[:-1]):  # the last token is never fed
        decode_step(t3, torch.tensor([tok]), j + 1, L + j, ref)
    n = L + len(toks) - 1
    torch.testing.assert_close(cache.k[:, :, :, :n], ref.k[:, :, :, :n], atol=1e-5, rtol=0)
    torch.testing.assert_close(cache.v[:, :, :, :n], ref.v[:, :, :, :n], atol=1e-5, rtol=0)
