"""One utterance being spoken: its KV slot, CFG rows, sampler, guard, noise, vocoder state, timings.

A session's per-token logic is a handful of step-wise methods, so that one loop can drive it
alone (`Session.run()`) and a scheduler can drive many at once (`engine.scheduler`) without a
second copy of it:

    begin(slot[, rows]) -> logits   prefill into a leased KV slot; start its sampler/guard row, make the vocoder
    sample(logits, attn) -> tok     guard observes the step's attention, then one token is drawn (on device)
    took(tok, position)             what a caller that sampled many sessions at once drew for this one
    accept(int(tok)) -> bool        bookkeeping once the host knows the id; False on EOS
    next_position -> (speech_pos, pos) | None   where the decode step feeds `tok`; None at the limit
    vocode(tok) / flush()           streaming token2wav: a chunk when one is due / the rest at the end
    renders / plan_chunk / finish_chunk   the same in two phases, for a caller that batches the flow
    end()                           release the slot (idempotent)

`Session.run()` is a generator: prefill, then one T3 step per token; every few tokens the
streaming token2wav turns what has arrived into audio, which is yielded at once. Everything the
session holds is released in `finally`, whether it ends on EOS, on the token limit, on an error,
on `cancel()` (checked before every step), or because the consumer stopped iterating.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import ClientError
from ..models.s3gen.cfm import Solver
from ..models.s3gen.model import S3Gen
from ..models.t3 import T3
from .alignment import OFFICIAL, GuardConfig
from .decode import check_prompt, decode_step, prefill_prompt
from .chunking import ChunkSchedule
from .kv_pool import KVPool, KVSlot
from .row_sampler import RowSampler
from .sampling import SamplingParams
from .token2wav import FlowRequest, StreamingToWav
from .voice import Voice

__all__ = ["Session", "SessionChunk", "SessionTimings", "resolve_guard"]


def resolve_guard(guard: GuardConfig | str | None) -> GuardConfig | None:
    """A guard profile by name ("official", "arabic"), a config as is, or None for no guard."""
    if guard is None or isinstance(guard, GuardConfig):
        return guard
    from .alignment import PROFILES

    try:
        return PROFILES[guard]
    except KeyError:
        raise ClientError(f"unknown alignment guard profile {guard!r}; choose from {sorted(PROFILES)}") from None


@dataclass
class SessionTimings:
    """Seconds, measured with `time.perf_counter` from `t_request` (when the request arrived)."""

    t_request: float
    prefill_s: float = 0.0  # T3 prefill alone
    first_token_s: float | None = None
    tokens: int = 0
    decode_s: float = 0.0  # T3 steps (sampling and guard included)
    vocoder_s: float = 0.0  # token2wav: flow + HiFT
    first_chunk_vocoder_s: float | None = None
    first_chunk_flow_ms: float | None = None  # of which the flow (encoder + CFM) ...
    first_chunk_hift_ms: float | None = None  # ... and HiFT
    queue_s: float = 0.0  # waiting for a KV slot in a scheduler's queue (0 when run alone)
    renders: int = 0  # token2wav renders so far (flow + HiFT calls) ...
    flow_ms: float = 0.0  # ... and their flow time in total


@dataclass
class SessionChunk:
    audio: np.ndarray  # float32, 24 kHz
    text_position: int  # the guard's position in the text tokens when the chunk was cut
    is_last: bool
    t_ready: float = 0.0  # perf_counter when the audio was ready


@dataclass
class Session:
    t3: T3
    s3gen: S3Gen
    pool: KVPool
    text_ids: torch.Tensor  # (T,) with SOT/EOT
    voice: Voice
    params: SamplingParams = SamplingParams()
    guard: GuardConfig | None = OFFICIAL
    schedule: ChunkSchedule = ChunkSchedule()
    generator: torch.Generator | None = None  # token sampling
    noise_generator: torch.Generator | None = None  # the vocoder's flow noise and source (kept apart so
    # that the tokens drawn for a seed do not depend on the chunk schedule)
    solver: Solver | None = None  # the flow's solver; None: the loaded decoder's official one
    timings: SessionTimings = field(default_factory=lambda: SessionTimings(time.perf_counter()))
    tokens: list[int] = field(default_factory=list)  # valid S3 ids emitted so far
    ids: list[int] = field(default_factory=list)  # every id emitted but EOS (what T3 was fed back)
    guard_counts: dict[str, int] = field(default_factory=dict)
    stopped_on_eos: bool = False

    def __post_init__(self):
        self._cancel = threading.Event()
        self._slot: KVSlot | None = None
        self._rows: RowSampler | None = None  # sampling and guard state (own, or a scheduler's)
        self._row = 0
        self._position: torch.Tensor | None = None
        self._vocoder: StreamingToWav | None = None
        self._prefill_len = 0
        self._max_new = 0
        self._drawn = 0  # tokens sampled so far, EOS included
        self._fed: torch.Tensor | None = None

    def cancel(self) -> None:
        """Stop before the next decode step (thread-safe); the generator then ends quietly."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def probes(self) -> tuple[tuple[int, int], ...]:
        """(layer, head) pairs whose attention the guard reads; () without a guard."""
        return self.guard.heads if self.guard is not None else ()

    @property
    def slot(self) -> KVSlot | None:
        return self._slot

    # ------------------------------------------------------------------ step-wise

    def prompt(self) -> torch.Tensor:
        """The prefill's input embeddings (2, L, C) (both CFG rows), checked to fit the pool's cache:
        what a caller that prefills several sessions in one forward (`decode.prefill_many`) runs."""
        v = self.voice
        with torch.inference_mode():
            cond = self.t3.conditioning(v.speaker_emb, v.prompt_tokens, v.exaggeration)
            embeds = self.t3.prefill_embeds(cond, self.text_ids.to(self.t3.speech_head.weight.device))
        return check_prompt(embeds, self.pool.max_len)

    def begin(self, slot: KVSlot, rows: RowSampler | None = None, prefilled: tuple | None = None) -> torch.Tensor:
        """Prefill into `slot` (owned by the session from now on: `end()` releases it) and set up
        the sampler, guard and vocoder. Returns the logits (2, V) of the first speech token.

        `rows`: a scheduler's sampler over its pool, in which the session takes row `slot.index`
        (the scheduler then samples all its sessions in one call); default: one of its own.
        `prefilled`: (logits, probe attention, prefill length, seconds) when the caller has run
        this session's prefill into `slot` already (with others: `decode.prefill_many`)."""
        if self._slot is not None:
            raise RuntimeError("this session has already begun; a session speaks once")
        self._slot = slot
        cfg = self.t3.cfg
        if prefilled is None:
            t0 = time.perf_counter()
            embeds = self.prompt()
            logits, attn, L = prefill_prompt(self.t3, embeds, slot.cache, self.probes)
            prefill_s = time.perf_counter() - t0
        else:
            logits, attn, L, prefill_s = prefilled
        self._prefill_len = L
        self._max_new = min(self.params.max_new_tokens, slot.cache.max_len - L)
        self.timings.prefill_s = prefill_s
        n_text = self.text_ids.shape[-1]
        span = (cfg.len_cond, cfg.len_cond + n_text)
        if rows is None:
            rows, self._row = RowSampler(self.t3, 1, max_text=n_text), 0
        else:
            self._row = slot.index
        self._rows = rows
        rows.start(self._row, self.params, self.generator, self.guard, span, attn)
        # Made here, not lazily where it first runs: its noise is drawn now, before any token, as
        # a solo run draws it (the generators may be shared, e.g. the global one).
        self._vocoder = StreamingToWav(self.s3gen, self.voice.gen, self.schedule, generator=self.noise_generator,
                                       max_tokens=self._max_new, solver=self.solver)  # it moves the voice to S3Gen's device itself
        return logits

    def sample(self, logits: torch.Tensor, attn: torch.Tensor | None = None) -> torch.Tensor:
        """Draw the next token (a (1,) device tensor; no host sync) from `logits` (2, V): the prefill's,
        or those of the decode step that fed the previous token, whose probe attention `attn`
        (n_heads, 1, >= text end) the guard observes first."""
        tok, position = self._rows.sample([self._row], logits[None], None if attn is None else attn[None])
        self.took(tok, position)
        return tok

    def took(self, tok: torch.Tensor, position: torch.Tensor) -> None:
        """Record a draw made for this session's row: `tok` (1,) and the guard's text `position`
        (1,) after it, device tensors."""
        self._fed, self._position = tok, position
        self._drawn += 1

    def accept(self, tok: int) -> bool:
        """Record the id `sample` drew (read on the host). False when it is EOS: the session is done."""
        tm = self.timings
        if tm.first_token_s is None:
            tm.first_token_s = time.perf_counter() - tm.t_request
        if tok == self.t3.cfg.stop_speech:
            self.stopped_on_eos = True
            return False
        tm.tokens += 1
        self.ids.append(tok)
        # BOS or padding ids are fed back (as the official loop does) but never vocoded.
        if tok < self.t3.cfg.num_valid_speech:
            self.tokens.append(tok)
        return True

    @property
    def fed(self) -> torch.Tensor:
        """The last sampled token, (1,) on the device: what the next decode step consumes."""
        return self._fed

    @property
    def guard_position(self) -> torch.Tensor | None:
        """The guard's text position now, as a device tensor (a snapshot: each step makes a new
        one), or None without a guard. A scheduler that vocodes later passes it to `vocode`/`flush`
        so that chunks report where the guard was when their last token was drawn."""
        return self._position if self.guard is not None else None

    @property
    def max_new(self) -> int:
        """Tokens this session may draw at most (its limit, or what its KV slot holds)."""
        return self._max_new

    @property
    def next_position(self) -> tuple[int, int] | None:
        """(speech position, absolute position) at which the next decode step feeds the last
        sampled token; None once `max_new_tokens` (or the cache) is used up."""
        n = self._drawn
        return (n, self._prefill_len + n - 1) if n < self._max_new else None

    def vocode(self, tok: int, position: torch.Tensor | None = None) -> SessionChunk | None:
        """Push an accepted id to the streaming token2wav; a chunk when the schedule says one is due.
        `position`: the `guard_position` when `tok` was drawn (default: now)."""
        if tok >= self.t3.cfg.num_valid_speech:
            return None
        t_voc = time.perf_counter()
        audio = self._vocoder.push([tok])
        return None if audio is None else self._chunk(audio, t_voc, False, position)

    def flush(self, position: torch.Tensor | None = None) -> SessionChunk:
        """The last chunk: everything not yet released, with the look-ahead resolved."""
        t_voc = time.perf_counter()
        return self._chunk(self._vocoder.flush(), t_voc, True, position)

    def renders(self, tok: int | None) -> bool:
        """Would `vocode(tok)` (`flush()` for None) run the flow? Reads state only."""
        v = self._vocoder
        if tok is None:
            return v.tokens_received > 0
        return tok < self.t3.cfg.num_valid_speech and v.tokens_received + 1 >= v.next_due

    def plan_chunk(self, tok: int | None) -> FlowRequest:
        """`vocode(tok)` (`flush()` for None) up to the flow, where `renders(tok)`: store the id and
        return the flow's inputs. A caller runs the flows of several sessions in one call
        (`token2wav.flow_mels`), then hands each its mel with `finish_chunk`."""
        if tok is not None:
            self._vocoder.add([tok])
        return self._vocoder.plan(finalize=tok is None)

    def finish_chunk(self, request: FlowRequest, mel: torch.Tensor, flow_ms, t_voc: float,
                     position: torch.Tensor | None = None) -> SessionChunk:
        """The chunk of `plan_chunk`'s render from its mel; `flow_ms`: the flow's milliseconds or
        its (start, end) `stage_clock` marks; `t_voc`: perf_counter when the render began."""
        audio = self._vocoder.finish(request, mel, flow_ms)
        return self._chunk(audio, t_voc, request.finalize, position)

    def vocoder_tensors(self) -> list[torch.Tensor]:
        """Device tensors of the streaming token2wav made by `begin` (see `StreamingToWav.device_tensors`)."""
        return self._vocoder.device_tensors() if self._vocoder is not None else []

    def end(self) -> None:
        """Give the KV slot back and keep the guard's counts. Safe to call more than once; the
        vocoder (which needs no slot) may still flush afterwards."""
        if self._rows is not None:  # read before the row can go to another session
            if self.guard is not None:
                self.guard_counts = self._rows.counts(self._row)  # one device read per session
            self._rows = None
        if self._slot is not None:
            self._slot.release()

    # ------------------------------------------------------------------ solo loop

    def run(self) -> Iterator[SessionChunk]:
        """Speak alone: lease a slot, then sample -> vocode -> decode step until EOS or the limit."""
        tm = self.timings
        slot = self.pool.lease()
        try:
            logits, attn = self.begin(slot), None
            while not self._cancel.is_set():
                t_step = time.perf_counter()
                tok_t = self.sample(logits, attn)
                tok = int(tok_t)  # the one host sync per token: emitting it needs the value
                tm.decode_s += time.perf_counter() - t_step
                if not self.accept(tok):
                    break
                chunk = self.vocode(tok)
                if chunk is not None:
                    yield chunk
                at = self.next_position
                if at is None:
                    break
                # Vocode first, then step: on the first chunk this keeps the next forward off the
                # time-to-first-audio path.
                t_step = time.perf_counter()
                logits, attn = decode_step(self.t3, tok_t, *at, slot.cache, self.probes)
                tm.decode_s += time.perf_counter() - t_step
            else:
                return  # cancelled: no final chunk
            yield self.flush()
        finally:
            self.end()

    def _chunk(self, audio: torch.Tensor, t_voc: float, is_last: bool, position: torch.Tensor | None) -> SessionChunk:
        tm, vocoder = self.timings, self._vocoder
        now = time.perf_counter()
        tm.vocoder_s += now - t_voc
        if tm.first_chunk_vocoder_s is None:
            tm.first_chunk_vocoder_s = now - t_voc
            if vocoder.last_timing is not None:
                tm.first_chunk_flow_ms = vocoder.last_timing.flow_ms
                tm.first_chunk_hift_ms = vocoder.last_timing.hift_ms
        for t in vocoder.timings[tm.renders:]:  # the renders since the last chunk (usually one)
            tm.flow_ms += t.flow_ms
        tm.renders = len(vocoder.timings)
        if position is None:
            position = self.guard_position
        return SessionChunk(audio.detach().float().cpu().numpy().reshape(-1),
                            int(position[0]) if position is not None else 0, is_last, now)
