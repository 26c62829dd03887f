"""Prefill of several sessions in one forward (`decode.prefill_many`) equals each prefilled alone.

Padded prompts of different lengths, slots not adjacent, rows of other sessions left untouched.
Tolerance: tests/test_batched_step.py's (1e-5 absolute: float rounding of other matmul and
attention shapes; a wrong row, position or mask moves values by orders of magnitude more).
"""

from __future__ import annotations

import torch

from nutq.engine.decode import check_prompt, prefill, prefill_many
from nutq.engine.kv_pool import KVPool

from tests.test_batched_step import PROBES, TOL, prompts, rows, t3  # noqa: F401 - fixtures

__all__ = ["prompts", "t3"]


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    err = (a - b).abs().max().item()
    assert err <= TOL, f"{what} differs by {err:.2e} from the solo prefill"


def test_sessions_prefilled_together_equal_each_alone(t3, prompts):
    slots = (3, 0, 2)  # prompt lengths 43, 41, 49: padded to 49
    max_len = 80
    solo_pool, pool = KVPool(t3.cfg.llama, 4, max_len), KVPool(t3.cfg.llama, 4, max_len)
    busy = torch.randn(pool.cache.k[:, 2:4].shape)  # slot 1 belongs to a session decoding meanwhile
    pool.cache.k[:, 2:4] = busy
    pool.cache.v[:, 2:4] = busy
    want = {s: prefill(t3, *prompts[s], rows(solo_pool, s), PROBES) for s in slots}
    embeds = [check_prompt(t3.prefill_embeds(*prompts[s]), max_len) for s in slots]
    assert len({e.shape[1] for e in embeds}) == 3
    got = prefill_many(t3, embeds, [rows(pool, s) for s in slots], PROBES)
    for s, (logits, attn, L) in zip(slots, got):
        w_logits, w_attn, w_L = want[s]
        assert L == w_L and attn.shape == w_attn.shape == (len(PROBES), L, L)
        _close(logits, w_logits, f"slot {s} logits")
        _close(attn, w_attn, f"slot {s} probe attention")
        for name in ("k", "v"):
            _close(getattr(rows(pool, s), name)[:, :, :, :L], getattr(rows(solo_pool, s), name)[:, :, :, :L],
                   f"slot {s} cached {name}")
    assert torch.equal(pool.cache.k[:, 2:4], busy) and torch.equal(pool.cache.v[:, 2:4], busy)


def test_one_session_and_no_probes(t3, prompts):
    pool, solo_pool = KVPool(t3.cfg.llama, 2, 80), KVPool(t3.cfg.llama, 2, 80)
    (logits, attn, L), = prefill_many(t3, [t3.prefill_embeds(*prompts[1])], [rows(pool, 1)])
    w_logits, w_attn, w_L = prefill(t3, *prompts[1], rows(solo_pool, 1))
    assert attn is None and w_attn is None and L == w_L
    _close(logits, w_logits, "logits")
