"""Speculative rounds for a session the scheduler runs: the engine's draft-and-verify.

The scheduler keeps one sampling and guard state per session (`RowSampler`). A round drafts k
tokens with the session's `DraftRunner`, verifies them with ONE target forward over k + 1 positions
on the session's own KV slot, and decides each position with the row's own chain, in order:

    rows.process(row, logits_i, attn_i)   the guard observes the position's attention row (the
                                          token it consumed is the last committed one), then the
                                          guarded, penalised, filtered logits p_i
    speculative_choice(p_i, q_i, d_i)     accept d_i with min(1, p_i/q_i), else a residual draw
    rows.draw(row, p_k)                   the bonus token, drawn exactly as a plain step draws
    rows.commit(row, tok)                 penalty set and fed token, as a plain step leaves them

so the row's state after a round is exactly what plain steps emitting the same tokens leave, and a
session may alternate freely between rounds (a small batch) and plain batched steps (a large one).
Emitted tokens have the plain sampler's distribution (see `engine.speculative` for the argument);
greedy rounds emit the plain loop's tokens.

The draft's state (its own small KV cache, the tokens it consumed) is made at the session's first
round, so a session that only ever runs in large batches pays nothing, and it catches up on the
tokens plain steps committed in one forward (`DraftRunner.propose`).
"""

from __future__ import annotations

import torch

from .draft import DraftRunner
from .row_sampler import RowSampler
from .session import Session
from .speculative import AdaptiveK, SpecConfig, SpecStats, speculative_choice

__all__ = ["SpecSession"]

Drawn = list[tuple[torch.Tensor, torch.Tensor]]  # per emitted token: ((1,) id, (1,) guard position)


def _accept_generator(gen: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    """The acceptance uniforms' own stream: seeded from the session's token generator (so a seeded
    request stays reproducible) but apart from it (its draws stay those of the plain loop)."""
    if gen is None:
        return None
    g = torch.Generator(device=device)
    g.manual_seed((gen.initial_seed() * 0x9E3779B1 + 0x7F4A7C15) % 2**63)
    return g


class SpecSession:
    """One session's draft state and adaptive k, driven by the scheduler's engine thread."""

    def __init__(self, spec: SpecConfig, session: Session, rows: RowSampler):
        s, t3 = session, session.t3
        cfg = t3.cfg
        self.spec, self.session, self.rows, self.row = spec, s, rows, s.slot.index
        self.device = dev = t3.speech_head.weight.device
        self.eos = cfg.stop_speech
        text_ids = s.text_ids.to(dev)
        v = s.voice
        with torch.inference_mode():
            cond = t3.conditioning(v.speaker_emb, v.prompt_tokens, v.exaggeration)
            embeds = t3.prefill_embeds(cond, text_ids, cfg_rows=True)
        draft = t3 if spec.draft == "target" else spec.draft
        guard = s.guard if spec.draft == "target" and spec.draft_guard else None
        span = (cfg.len_cond, cfg.len_cond + text_ids.shape[-1])
        self.runner = DraftRunner(draft, embeds, s.params, s.slot.cache.max_len, guard=guard, text_span=span)
        self.ctl = AdaptiveK(spec)
        self.stats = SpecStats()  # this session's rounds so far
        self.last = SpecStats()  # the latest round's alone (what the scheduler adds to its totals)
        self._accept_gen = _accept_generator(rows.generator(self.row), dev)

    def round(self) -> Drawn:
        """Draft, verify in one forward, decide: 1 to k + 1 tokens, in order, ending at the first
        rejection, at EOS or at the session's token limit. Each comes with the guard's position
        when it was drawn. The caller records them with `Session.took`/`accept`, as plain draws."""
        s, t3, rows, row = self.session, self.session.t3, self.rows, self.row
        at = s.next_position
        if at is None:
            raise RuntimeError("a speculative round for a session at its token limit")
        speech_pos, pos = at
        committed = s.ids
        k = min(self.ctl.k, s.max_new - len(committed) - 1)
        gen = rows.generator(row)
        params = rows.params(row)
        with torch.inference_mode():
            drafts, q = self.runner.propose(committed, rows.seen(row), k, gen) if k > 0 else ([], None)
            feed = [committed[-1]] + (drafts[:-1] if drafts and drafts[-1] == self.eos else drafts)
            ids = torch.tensor([feed], device=self.device)
            e = t3.embed_speech(ids, torch.arange(speech_pos, speech_pos + len(feed), device=self.device))
            out = t3.forward_hidden(e.expand(2, -1, -1), pos, s.slot.cache, probes=s.probes)
            h, attn = out if s.probes else (out, None)
            logits = t3.speech_logits(h).float()  # (2, T, V)
        drawn: Drawn = []
        accepted = tested = 0
        for i in range(len(feed)):
            proc = rows.process(row, logits[:, i], None if attn is None else attn[:, i:i + 1])
            if i < len(drafts):
                tested += 1
                ok, t = speculative_choice(proc[0], q[i], drafts[i], greedy=params.greedy,
                                           tolerance=self.spec.tolerance, generator=gen,
                                           accept_generator=self._accept_gen)
                tok = torch.tensor([t], device=self.device)
            else:  # every draft accepted: the bonus token, drawn as a plain step draws it
                ok, tok = False, rows.draw(row, proc)
                t = int(tok)
            drawn.append((tok, rows.commit(row, tok)))
            accepted += int(ok)
            if not ok or t == self.eos:
                break
        self.last = SpecStats(rounds=1, drafted=len(drafts), tested=tested, accepted=accepted, emitted=len(drawn))
        self.stats.add(self.last)
        self.ctl.update(tested, accepted)
        return drawn
