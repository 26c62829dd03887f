"""Lossless speculative decoding for T3: a draft proposes k tokens, one target forward verifies them.

Per round: the draft proposes d_0..d_{k-1} with the distributions q_i it drew them from; the target
runs ONE forward over [last committed token, d_0..d_{k-1}] (k + 1 positions, both CFG rows) on its
position-addressed KV cache; then, position by position and in order, exactly what the plain loop
(`engine.generate`) does at that step: the alignment guard observes that position's attention row
with the token it consumed, and the CFG mix, the guard's EOS edit, the repetition penalty (over
every token emitted so far, the accepted drafts of this round included), temperature, min_p, top_p
and top_k give the target distribution p_i. Draft i is accepted with probability min(1, p_i/q_i);
on the first rejection a token is drawn from norm(max(0, p_i - q_i)) and the round ends; if all are
accepted a bonus token is drawn from p_k. This is standard speculative sampling (Leviathan et al.,
Chen et al. 2023): every emitted token has exactly the plain sampler's distribution given the
tokens before it, guard included, because p_i is computed from the same inputs the plain step would
see. Greedy mode accepts a draft iff it is the target's argmax and otherwise emits that argmax, so
it reproduces the plain loop's tokens. Rejected positions' keys/values are simply overwritten by the
next round (the cache is addressed by absolute position and attention never reads past the query).

`SpecConfig.tolerance` (beta > 0) accepts when r < min(1, p/q) + beta, as SSD (arXiv 2505.15380)
does for speech: more tokens per forward, but the output distribution is then NOT the target's
(lossy); 0, the default, keeps it exact.

Random streams: draft draws, residual and bonus draws use `generator`; acceptance uniforms use
`accept_generator`. With draft = target every draft is accepted and the token draws line up one for
one with the plain loop's, so the output equals plain decoding with the same `generator` seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ..models.t3 import T3
from .alignment import OFFICIAL, AlignmentGuard, GuardConfig
from .draft import DraftRunner, DraftT3
from .generate import StepInfo
from .sampling import SamplingParams, cfg_mix, sample, sampling_logits

__all__ = ["SpecConfig", "SpecStats", "AdaptiveK", "speculative_choice", "iter_speech_tokens_speculative"]


@dataclass(frozen=True)
class SpecConfig:
    """`draft`: a `DraftT3`, or "target" to draft with the target itself (the upper bound on
    acceptance; no speedup, a correctness and benchmarking tool). `k`: drafts per round (the
    start value when `adaptive`). The costs are in units of one plain target step and feed the
    adaptive choice of k; the defaults are this repository's CPU measurements (BENCHMARKS.md)."""

    k: int = 4
    draft: DraftT3 | str = field(default="target", compare=False)
    adaptive: bool = True
    k_max: int = 8
    tolerance: float = 0.0  # SSD's beta; > 0 is lossy
    draft_cost: float = 0.15  # one draft step (a 4-layer draft of the 30-layer target, CFG rows)
    verify_cost_per_token: float = 0.08  # each extra position in the verify forward
    draft_guard: bool = True  # draft = target: give the draft its own guard (full acceptance)
    # A scheduler decodes speculatively while at most this many sessions step together, and with
    # plain batched steps above: a batched step's cost grows slowly with its rows, so beyond a few
    # sessions one step for all beats a round per session (measured: BENCHMARKS.md).
    max_batch: int = 1

    def __post_init__(self):
        if not 1 <= self.k <= self.k_max:
            raise ValueError(f"k must be in [1, k_max={self.k_max}], got {self.k}")
        if not 0.0 <= self.tolerance < 1.0:
            raise ValueError(f"tolerance must be in [0, 1), got {self.tolerance}")
        if not isinstance(self.draft, DraftT3) and self.draft != "target":
            raise ValueError(f"draft must be a DraftT3 or 'target', got {self.draft!r}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.draft_cost < 0 or self.verify_cost_per_token < 0:
            raise ValueError("costs must be >= 0")


@dataclass
class SpecStats:
    rounds: int = 0  # target verify forwards
    drafted: int = 0  # draft tokens proposed
    tested: int = 0  # ... the target judged: those before a round's first rejection, and that one
    accepted: int = 0  # ... of which accepted
    emitted: int = 0  # tokens emitted by rounds (accepted + the resampled/bonus one each round)

    @property
    def acceptance_rate(self) -> float:
        """The chance that the target accepts a drafted token it judges: the alpha of
        `expected_tokens` and of the speedup curve. (accepted / drafted would understate it for
        k > 1: a round's drafts after its first rejection are never judged; at alpha 0.27 and
        k = 4 it reads 0.09.)"""
        return self.accepted / self.tested if self.tested else 0.0

    @property
    def mean_accepted_length(self) -> float:
        return self.accepted / self.rounds if self.rounds else 0.0

    @property
    def tokens_per_forward(self) -> float:
        return self.emitted / self.rounds if self.rounds else 0.0

    def add(self, other: "SpecStats") -> None:
        self.rounds += other.rounds
        self.drafted += other.drafted
        self.tested += other.tested
        self.accepted += other.accepted
        self.emitted += other.emitted

    def as_dict(self) -> dict:
        return {"rounds": self.rounds, "drafted": self.drafted, "tested": self.tested, "accepted": self.accepted,
                "emitted": self.emitted,
                "acceptance_rate": self.acceptance_rate, "mean_accepted_length": self.mean_accepted_length,
                "tokens_per_forward": self.tokens_per_forward}


def expected_tokens(alpha: float, k: int) -> float:
    """Tokens per round with k drafts each accepted with probability alpha: 1 + a + ... + a^k."""
    return float(k + 1) if alpha >= 1.0 else (1.0 - alpha ** (k + 1)) / (1.0 - alpha)


class AdaptiveK:
    """Per-session k from the recent acceptance rate (an exponential average over rounds): the k
    in [1, k_max] with the most expected tokens per unit of cost under the config's cost model."""

    def __init__(self, spec: SpecConfig, alpha0: float = 0.7, decay: float = 0.8):
        self.spec, self.alpha, self.decay = spec, alpha0, decay
        self.k = spec.k

    def update(self, tested: int, accepted: int) -> None:
        """One round: `tested` drafts judged (up to and including the first rejection), `accepted`
        of them accepted."""
        if not self.spec.adaptive or tested == 0:
            return
        self.alpha = self.decay * self.alpha + (1 - self.decay) * accepted / tested
        s = self.spec

        def rate(k: int) -> float:
            return expected_tokens(self.alpha, k) / (1.0 + k * (s.draft_cost + s.verify_cost_per_token))

        self.k = max(range(1, s.k_max + 1), key=rate)


def speculative_choice(proc: torch.Tensor, q: torch.Tensor, draft_token: int, *, greedy: bool,
                       tolerance: float = 0.0, generator: torch.Generator | None = None,
                       accept_generator: torch.Generator | None = None) -> tuple[bool, int]:
    """Accept or replace one draft. proc (V,): the target's processed logits; q (V,): the draft's
    distribution. Returns (accepted, token)."""
    if greedy:
        t = int(proc.argmax())
        return t == draft_token, t
    p = proc.softmax(-1)
    r = float(torch.rand((), generator=accept_generator, device=p.device))
    ratio = float(p[draft_token] / q[draft_token])
    # the tolerance loosens acceptance, but never for a token the target rules out (p = 0: filtered
    # by min_p/top_p/top_k, or EOS suppressed by the alignment guard)
    if r < min(1.0, ratio) + (tolerance if ratio > 0 else 0.0):
        return True, draft_token
    residual = (p - q).clamp_min(0.0)
    total = residual.sum()
    # total == 0 only when p == q (then this branch is reachable only with tolerance... never);
    # fall back to p rather than dividing by zero.
    dist = residual / total if total > 0 else p
    return False, int(torch.multinomial(dist, 1, generator=generator))


def iter_speech_tokens_speculative(
    t3: T3,
    cond: torch.Tensor,
    text_ids: torch.Tensor,
    params: SamplingParams = SamplingParams(),
    spec: SpecConfig = SpecConfig(),
    *,
    guard: GuardConfig | None = OFFICIAL,
    generator: torch.Generator | None = None,
    accept_generator: torch.Generator | None = None,
    record_probs: bool = False,
    stats: dict | None = None,
    spec_stats: SpecStats | None = None,
    cache_out: list | None = None,
) -> Iterator[StepInfo]:
    """The plain loop's contract (`engine.generate.iter_speech_tokens`), decoded speculatively.

    Yields one StepInfo per token, EOS included as the last. `spec_stats` accumulates rounds and
    acceptance; `stats` receives the guard's counts; `cache_out`, if given, receives the target's
    KV cache and prompt length (tests compare it with a plain run's). `params.ignore_eos` is
    supported here (benchmarks of a fixed length).
    """
    cfg = t3.cfg
    eos = cfg.stop_speech
    dev = t3.speech_head.weight.device
    text_ids = text_ids.to(dev)
    sst = spec_stats if spec_stats is not None else SpecStats()
    eos_idx = torch.tensor([eos], device=dev)
    with torch.inference_mode():
        embeds = t3.prefill_embeds(cond.to(dev), text_ids, cfg_rows=True)
        L = embeds.shape[1]
        max_len = L + params.max_new_tokens + 1
        cache = t3.new_cache(batch=2, max_len=max_len)
        if cache_out is not None:
            cache_out[:] = [cache, L]
        span = (cfg.len_cond, cfg.len_cond + text_ids.shape[-1])
        probes = guard.heads if guard is not None else ()
        g = AlignmentGuard(span, guard) if guard is not None else None
        draft_model = t3 if spec.draft == "target" else spec.draft
        runner = DraftRunner(draft_model, embeds, params, max_len,
                             guard=guard if spec.draft == "target" and spec.draft_guard else None, text_span=span)
        ctl = AdaptiveK(spec)
        out = t3.forward_hidden(embeds, 0, cache, probes=probes)
    # A normal tensor (made outside inference mode), updated between the generator's yields.
    seen = torch.zeros(1, cfg.speech_vocab, dtype=torch.bool, device=dev)
    seen[0, cfg.start_speech] = True

    def processed(logits: torch.Tensor, attn, i: int, fed: int) -> tuple[torch.Tensor, int]:
        """The plain step's chain at verify position i (logits (2, T, V), attn (heads, T, kv))."""
        mixed = cfg_mix(logits[0, i:i + 1], logits[1, i:i + 1], params.cfg_weight)
        position = 0
        if g is not None:
            d = g.observe(attn if g.frame == 0 else attn[:, i:i + 1], fed)
            mixed = AlignmentGuard.apply(mixed, d, eos)
            position = d.text_position
        if params.ignore_eos:
            mixed = mixed.index_fill(-1, eos_idx, float("-inf"))
        return sampling_logits(mixed, seen, params), position

    committed: list[int] = []
    try:
        # The first token comes from the prefill, as in the plain loop (nothing to verify yet).
        with torch.inference_mode():
            h, attn = out if probes else (out, None)
            proc, position = processed(t3.speech_logits(h[:, -1:]).float(), attn, 0, cfg.start_speech)
            tok = int(sample(proc, params, generator)[0])
        yield StepInfo(0, tok, position, proc.softmax(-1)[0] if record_probs else None)
        if tok == eos:
            return
        seen[0, tok] = True
        committed.append(tok)
        while len(committed) < params.max_new_tokens:
            n = len(committed)
            k = min(ctl.k, params.max_new_tokens - n - 1)
            with torch.inference_mode():
                drafts, q = runner.propose(committed, seen, k, generator) if k > 0 else ([], None)
                feed = [committed[-1]] + (drafts[:-1] if drafts and drafts[-1] == eos else drafts)
                ids = torch.tensor([feed], device=dev)
                e = t3.embed_speech(ids, torch.arange(n, n + len(feed), device=dev)).expand(2, -1, -1)
                out = t3.forward_hidden(e, L + n - 1, cache, probes=probes)
                h, attn = out if probes else (out, None)
                logits = t3.speech_logits(h).float()  # (2, T, V)
            sst.rounds += 1
            sst.drafted += len(drafts)
            accepted_here = tested_here = 0
            for i in range(len(feed)):
                with torch.inference_mode():
                    proc, position = processed(logits, attn, i, feed[i])
                    if i < len(drafts):
                        tested_here += 1
                        ok, tok = speculative_choice(proc[0], q[i], drafts[i], greedy=params.greedy,
                                                     tolerance=spec.tolerance, generator=generator,
                                                     accept_generator=accept_generator)
                    else:
                        ok, tok = False, int(sample(proc, params, generator)[0])  # the bonus token
                accepted_here += int(ok)
                sst.emitted += 1
                yield StepInfo(len(committed), tok, position, proc.softmax(-1)[0] if record_probs else None)
                if tok == eos:
                    sst.accepted += accepted_here
                    sst.tested += tested_here
                    return
                seen[0, tok] = True
                committed.append(tok)
                if not ok or len(committed) >= params.max_new_tokens:
                    break
            sst.accepted += accepted_here
            sst.tested += tested_here
            ctl.update(tested_here, accepted_here)
    finally:
        if stats is not None and g is not None:
            stats.update(g.counts)
