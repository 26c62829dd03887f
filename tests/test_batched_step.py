"""The batched decode step (many sessions, one forward over the KV pool) equals each session alone.

Tolerances: batched and solo are not bitwise equal because the batched forward runs matmuls of
(2n, C) rows where the solo one runs (2, C), and SDPA takes its masked kernel over a longer span;
BLAS blocks and accumulates differently per shape. On the tiny model that rounding measured 3e-6
on logits of magnitude ~4 and 1.5e-7 on attention weights, so 1e-5 absolute on logits, attention
and cache contents still catches any real mix-up (a wrong row, position or mask moves values by
orders of magnitude more).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from nutq.engine.alignment import OFFICIAL
from nutq.engine.batched_step import BatchedStep, batch_ladder
from nutq.engine.decode import decode_step, prefill
from nutq.engine.kv_pool import ROWS_PER_SESSION, KVPool
from nutq.models.random_init import randomize_module
from nutq.models.t3 import T3, T3_TINY

PROBES = OFFICIAL.heads
TOL = 1e-5
TEXT_LEN = {0: 5, 1: 9, 2: 13, 3: 7}  # a different prompt length in every slot
# prompt length = len_cond (34) + text + 2 BOS: 41, 45, 49, 43


@pytest.fixture(scope="module")
def t3():
    return randomize_module(T3(T3_TINY), 0).eval()


@pytest.fixture(scope="module")
def prompts(t3):
    """(cond, text ids) for a session in each slot, each with its own speaker and text."""
    out = {}
    for s, n in TEXT_LEN.items():
        g = torch.Generator().manual_seed(100 + s)
        with torch.inference_mode():
            cond = t3.conditioning(torch.randn(1, 256, generator=g), torch.randint(0, 6561, (1, 12), generator=g), 0.5)
        out[s] = cond, torch.randint(1, 2000, (n,), generator=g)
    return out


@dataclass
class Sess:
    logits: torch.Tensor  # (2, V) of the last step
    L: int  # prompt length
    k: int = 0  # steps taken

    def token(self) -> torch.Tensor:
        return self.logits[0].argmax().reshape(1)  # greedy on the cond row


def rows(pool: KVPool, s: int):
    return pool.cache.rows(ROWS_PER_SESSION * s, ROWS_PER_SESSION)


def prefilled(t3, prompts, slots, max_len=80, pool_slots=4) -> tuple[KVPool, dict[int, Sess]]:
    pool = KVPool(t3.cfg.llama, pool_slots, max_len)
    sessions = {}
    for s in slots:
        logits, _, L = prefill(t3, *prompts[s], rows(pool, s), PROBES)
        sessions[s] = Sess(logits, L)
    return pool, sessions


def step_batched(step: BatchedStep, sessions: dict[int, Sess], slots, *,
                 no_sync: bool = False) -> tuple[list[int], torch.Tensor]:
    """One batched step of `slots`; `no_sync` makes any host sync inside the step an error (CUDA)."""
    toks = [sessions[s].token() for s in slots]
    args = (list(slots), torch.cat(toks), [sessions[s].k + 1 for s in slots],
            [sessions[s].L + sessions[s].k for s in slots])
    if no_sync:
        torch.cuda.set_sync_debug_mode("error")
    try:
        logits, attn = step(*args)
    finally:
        if no_sync:
            torch.cuda.set_sync_debug_mode("default")
    for i, s in enumerate(slots):
        sessions[s].logits, sessions[s].k = logits[i], sessions[s].k + 1
    return [int(t) for t in toks], attn


def step_solo(t3, pool, sess: Sess, s: int) -> tuple[int, torch.Tensor]:
    tok = sess.token()
    sess.logits, attn = decode_step(t3, tok, sess.k + 1, sess.L + sess.k, rows(pool, s), PROBES)
    sess.k += 1
    return int(tok), attn


def assert_cache_close(pool_a, pool_b, s, length):
    for name in ("k", "v"):
        a = getattr(rows(pool_a, s), name)[:, :, :, :length]
        b = getattr(rows(pool_b, s), name)[:, :, :, :length]
        err = (a - b).abs().max().item()
        assert err <= TOL, f"slot {s} cached {name} differs by {err:.2e} from the solo run"


@pytest.mark.parametrize("static", [False, True], ids=["eager-span", "static-span"])
@pytest.mark.parametrize("slots", [(2,), (0, 2), (3, 0, 1)])
def test_batched_steps_equal_each_session_stepped_alone(t3, prompts, slots, static):
    """Sessions in non-contiguous slots, with different prompt lengths, joining one step apart
    (so they differ in speech position too): logits, probe attention, greedy tokens and caches
    match `decode_step` run per session on a separate pool."""
    K = 4
    pool_b, batched = prefilled(t3, prompts, slots)
    pool_s, solo = prefilled(t3, prompts, slots)
    step = BatchedStep(t3, pool_b, PROBES, static=static)
    tokens_b = {s: [] for s in slots}
    tokens_s = {s: [] for s in slots}
    for t in range(K + len(slots) - 1):
        active = [s for i, s in enumerate(slots) if i <= t < i + K]
        toks, attn = step_batched(step, batched, active)
        span = attn.shape[-1]
        assert attn.shape == (len(active), len(PROBES), 1, span)
        assert span == (pool_b.max_len if static else max(batched[s].L + batched[s].k for s in active))
        for i, s in enumerate(active):
            tokens_b[s].append(toks[i])
            tok, attn_solo = step_solo(t3, pool_s, solo[s], s)
            tokens_s[s].append(tok)
            err = (batched[s].logits - solo[s].logits).abs().max().item()
            assert err <= TOL, f"slot {s} step {solo[s].k}: logits differ by {err:.2e}"
            n = attn_solo.shape[-1]  # the solo step's kv_len = its pos + 1
            assert (attn[i, ..., :n] - attn_solo).abs().max().item() <= TOL
            assert torch.all(attn[i, ..., n:] == 0), "attention beyond a session's own length must be 0"
    assert tokens_b == tokens_s
    for s in slots:
        assert_cache_close(pool_b, pool_s, s, batched[s].L + K)


def test_eager_span_and_static_span_agree(t3, prompts):
    slots = (1, 3)
    pool_e, eager = prefilled(t3, prompts, slots)
    pool_t, static = prefilled(t3, prompts, slots)
    step_e = BatchedStep(t3, pool_e, PROBES, static=False)
    step_t = BatchedStep(t3, pool_t, PROBES, static=True)
    for _ in range(3):
        _, attn_e = step_batched(step_e, eager, slots)
        _, attn_t = step_batched(step_t, static, slots)
        for s in slots:
            assert (eager[s].logits - static[s].logits).abs().max().item() <= TOL
        span = attn_e.shape[-1]
        assert span < attn_t.shape[-1] == pool_t.max_len
        assert (attn_e - attn_t[..., :span]).abs().max().item() <= TOL
        assert torch.all(attn_t[..., span:] == 0)
    for s in slots:
        assert_cache_close(pool_e, pool_t, s, eager[s].L + eager[s].k)


def test_ladder_is_capped_at_the_pool_and_always_reaches_it():
    assert batch_ladder(4) == (1, 2, 4)
    assert batch_ladder(6) == (1, 2, 4, 6)
    assert batch_ladder(100) == (1, 2, 4, 8, 16, 32, 64, 100)
    assert batch_ladder(8, (3, 1, 3)) == (1, 3, 8)
    for bad in [(0,), (9,), (2.0,)]:
        with pytest.raises(ValueError, match="ladder sizes"):
            batch_ladder(8, bad)


def test_step_runs_the_smallest_bucket_and_rows_beyond_it_are_untouched(t3, prompts):
    pool, sessions = prefilled(t3, prompts, (0, 1, 2, 3))
    step = BatchedStep(t3, pool, PROBES)
    assert [step.bucket_for(s) for s in ([0], [1], [0, 1], [2], [3, 0])] == [1, 2, 2, 4, 4]
    before = pool.cache.k.clone()
    step_batched(step, sessions, [1])  # bucket 2: rows of slots 0 and 1 only
    changed = (pool.cache.k != before).any(dim=(0, 2, 4))  # (rows, positions)
    last = pool.max_len - 1
    assert not changed[4:].any(), "slots 2 and 3 lie outside the bucket and must not be touched"
    assert changed[0:2].nonzero()[:, 1].unique().tolist() == [last], "slot 0 is dummy: only its last position"
    assert changed[2:4].nonzero()[:, 1].unique().tolist() == [sessions[1].L], "slot 1 writes its own position"


def test_a_leased_slot_left_out_of_steps_is_unchanged_and_resumes_exactly(t3, prompts):
    """Slot 1 waits while slots 0 and 2 step (its rows take the dummy writes at the last cache
    position); its cache up to that position stays bit-identical, and when it resumes it runs all
    the way to the last position, equal to a session that never shared the pool. Slot 2 reaches
    the last position while slot 1's dummy row writes the same position."""
    max_len = 52
    pool, batched = prefilled(t3, prompts, (0, 1, 2), max_len=max_len)
    pool_s, solo = prefilled(t3, prompts, (1,), max_len=max_len)
    step = BatchedStep(t3, pool, PROBES)
    k1, v1 = rows(pool, 1).k.clone(), rows(pool, 1).v.clone()
    for _ in range(3):
        step_batched(step, batched, [0, 2])
    assert batched[2].L + batched[2].k - 1 == max_len - 1  # slot 2 stepped at the last position
    assert torch.equal(rows(pool, 1).k[:, :, :, :-1], k1[:, :, :, :-1])
    assert torch.equal(rows(pool, 1).v[:, :, :, :-1], v1[:, :, :, :-1])
    assert not torch.equal(rows(pool, 1).k[:, :, :, -1], k1[:, :, :, -1]), "the dummy write was expected here"
    tokens, tokens_solo = [], []
    while batched[1].L + batched[1].k < max_len:
        tokens += step_batched(step, batched, [1])[0]
        tokens_solo.append(step_solo(t3, pool_s, solo[1], 1)[0])
        assert (batched[1].logits - solo[1].logits).abs().max().item() <= TOL
    assert tokens == tokens_solo and len(tokens) == max_len - batched[1].L
    assert_cache_close(pool, pool_s, 1, max_len)


@pytest.mark.parametrize("slots, ntok, speech_pos, pos, msg", [
    ([], 0, [], [], "at least one"),
    ([0, 0], 2, [1, 1], [40, 40], "distinct"),
    ([4], 1, [1], [40], r"slots must be in \[0, 4\)"),
    ([-1], 1, [1], [40], r"slots must be in \[0, 4\)"),
    ([0, 1], 1, [1, 1], [40, 40], "tokens of shape"),
    ([0, 1], 2, [1], [40, 40], "speech_pos and pos"),
    ([0], 1, [1], [80], r"positions must be in \[0, 80\)"),
    ([0], 1, [1], [-1], "positions must be in"),
    ([0], 1, [10**6], [40], "speech positions must be in"),
])
def test_bad_step_input_is_a_clear_error(t3, slots, ntok, speech_pos, pos, msg):
    step = BatchedStep(t3, KVPool(t3.cfg.llama, 4, 80))
    with pytest.raises(ValueError, match=msg):
        step(slots, torch.zeros(ntok, dtype=torch.long), speech_pos, pos)
    with pytest.raises(ValueError, match="int64"):
        step([0], torch.zeros(1, dtype=torch.int32), [1], [40])


def test_graphs_are_refused_off_cuda_and_capture_is_a_no_op_there(t3):
    pool = KVPool(t3.cfg.llama, 2, 16)
    with pytest.raises(ValueError, match="CUDA graphs need T3 on a CUDA device"):
        BatchedStep(t3, pool, cuda_graphs=True)
    step = BatchedStep(t3, pool)
    assert not step.cuda_graphs and not step.static
    step.capture()
    logits, attn = step([1], torch.tensor([5]), [1], [3])
    assert logits.shape == (1, 2, t3.cfg.speech_vocab) and logits.dtype == torch.float32 and attn is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_graph_replay_equals_the_static_eager_step_without_host_syncs(prompts):
    """Graphs are captured after prefill (warm-up writes only the dummy position, so the
    prefilled sessions are unharmed); each replay equals the same code run eagerly."""
    dev = torch.device("cuda")
    model = randomize_module(T3(T3_TINY), 0).eval().to(dev)
    on_dev = {s: (c.to(dev), ids.to(dev)) for s, (c, ids) in prompts.items()}

    def setup(**kw):
        pool = KVPool(model.cfg.llama, 4, 80, device=dev)
        sessions = {}
        for s in (0, 1, 3):
            logits, _, L = prefill(model, *on_dev[s], rows(pool, s), PROBES)
            sessions[s] = Sess(logits, L)
        return pool, sessions, BatchedStep(model, pool, PROBES, **kw)

    pool_g, graphed, step_g = setup()
    pool_e, eager, step_e = setup(cuda_graphs=False, static=True)
    assert step_g.cuda_graphs
    with pytest.raises(RuntimeError, match="capture"):
        step_batched(step_g, graphed, [0])
    step_g.capture()
    for slots in ([0], [1, 0], [3, 0], [1], [0, 1, 3]):  # buckets 1, 2, 4, 2, 4 (ladder 1, 2, 4)
        _, attn_g = step_batched(step_g, graphed, slots, no_sync=True)
        _, attn_e = step_batched(step_e, eager, slots)
        for s in slots:
            assert (graphed[s].logits - eager[s].logits).abs().max().item() <= TOL
        assert (attn_g - attn_e).abs().max().item() <= TOL
    for s in (0, 1, 3):
        assert_cache_close(pool_g, pool_e, s, graphed[s].L + graphed[s].k)


def test_attention_span_buckets_equal_the_full_span(t3, prompts):
    """Static steps read the smallest span bucket covering their furthest session: the outputs and
    cache equal those of steps over the whole cache (one bucket per step here, crossing several)."""
    slots = (0, 2)
    pool_f, full = prefilled(t3, prompts, slots)
    pool_b, bucketed = prefilled(t3, prompts, slots)
    top = max(full[s].L for s in slots)
    step_f = BatchedStep(t3, pool_f, PROBES, static=True, spans=())
    step_b = BatchedStep(t3, pool_b, PROBES, static=True, spans=(top + 1, top + 2, top + 4, 4 * top))
    assert step_f.spans == (pool_f.max_len,) and step_b.spans == (top + 1, top + 2, top + 4, pool_b.max_len)
    seen = set()
    for _ in range(4):
        _, attn_f = step_batched(step_f, full, slots)
        _, attn_b = step_batched(step_b, bucketed, slots)
        span = attn_b.shape[-1]
        seen.add(span)
        for s in slots:
            assert (full[s].logits - bucketed[s].logits).abs().max().item() <= TOL
        assert (attn_f[..., :span] - attn_b).abs().max().item() <= TOL and torch.all(attn_f[..., span:] == 0)
    assert seen == {top + 1, top + 2, top + 4}
    for s in slots:
        assert_cache_close(pool_f, pool_b, s, full[s].L + full[s].k)
