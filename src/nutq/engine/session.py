"""One utterance being spoken: its KV slot, CFG rows, sampler, guard, noise, vocoder state, timings.

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

from ..models.s3gen.model import S3Gen
from ..models.t3 import T3
from .alignment import OFFICIAL, GuardConfig
from .alignment_device import DeviceGuard
from .decode import Sampler, decode_step, prefill
from .chunking import ChunkSchedule
from .kv_pool import KVPool
from .sampling import SamplingParams
from .token2wav import StreamingToWav
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
        raise ValueError(f"unknown alignment guard profile {guard!r}; choose from {sorted(PROFILES)}") from None


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


@dataclass
class SessionChunk:
    audio: np.ndarray  # float32, 24 kHz
    text_position: int  # the guard's position in the text tokens when the chunk was cut
    is_last: bool
    t_ready: float = 0.0  # perf_counter when the audio was ready


class _Guard:
    """The on-device alignment guard for one session: its decisions stay tensors, so the sampler
    applies them without the host reading anything; the text position is read per chunk only."""

    def __init__(self, cfg: GuardConfig, span: tuple[int, int], max_frames: int, eos: int, bos: int,
                 prefill_attn: torch.Tensor):
        self.i, self.j = span
        self.eos = eos
        with torch.inference_mode():
            self.device_guard = DeviceGuard(1, self.j - self.i, cfg, max_frames=max_frames + 1,
                                            device=prefill_attn.device)
            # frame 0: the two BOS queries of the prefill over the text span
            self.position, self.suppress, self.force = self.device_guard.start(
                [prefill_attn[:, -2:, self.i:self.j]], bos=bos)

    def observe(self, attn: torch.Tensor, fed: torch.Tensor) -> None:
        """attn (n_heads, 1, kv_len) probe weights of the step that consumed `fed` ((1,) tensor)."""
        with torch.inference_mode():
            self.position, self.suppress, self.force = self.device_guard.observe(attn[None, :, 0, self.i:self.j], fed)

    def __call__(self, mixed: torch.Tensor) -> torch.Tensor:
        return self.device_guard.apply(mixed, self.suppress, self.force, self.eos)

    @property
    def text_position(self) -> int:
        return int(self.position[0])

    def counts(self) -> dict[str, int]:
        return {k: int(v[0]) for k, v in self.device_guard.counts().items()}


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
    timings: SessionTimings = field(default_factory=lambda: SessionTimings(time.perf_counter()))
    tokens: list[int] = field(default_factory=list)  # valid S3 ids emitted so far
    guard_counts: dict[str, int] = field(default_factory=dict)
    stopped_on_eos: bool = False

    def __post_init__(self):
        self._cancel = threading.Event()

    def cancel(self) -> None:
        """Stop before the next decode step (thread-safe); the generator then ends quietly."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> Iterator[SessionChunk]:
        cfg, tm = self.t3.cfg, self.timings
        dev = self.t3.speech_head.weight.device
        slot = self.pool.lease()
        guard = None
        try:
            t0 = time.perf_counter()
            text_ids = self.text_ids.to(dev)
            v = self.voice
            with torch.inference_mode():
                cond = self.t3.conditioning(v.speaker_emb, v.prompt_tokens, v.exaggeration)
            probes = self.guard.heads if self.guard is not None else ()
            logits, attn, L = prefill(self.t3, cond, text_ids, slot.cache, probes)
            max_new = min(self.params.max_new_tokens, slot.cache.max_len - L)
            tm.prefill_s = time.perf_counter() - t0
            if self.guard is not None:
                span = (cfg.len_cond, cfg.len_cond + text_ids.shape[-1])
                guard = _Guard(self.guard, span, max_new, cfg.stop_speech, cfg.start_speech, attn)
            sampler = Sampler(self.t3, self.params, self.generator)
            vocoder = StreamingToWav(self.s3gen, v.gen, self.schedule, generator=self.noise_generator,
                                     max_tokens=max_new)  # it moves the voice to S3Gen's device itself
            for step in range(max_new):
                if self._cancel.is_set():
                    return
                t_step = time.perf_counter()
                tok_t = sampler(logits, guard)
                tok = int(tok_t)  # the one host sync per token: emitting it needs the value
                now = time.perf_counter()
                tm.decode_s += now - t_step
                if tm.first_token_s is None:
                    tm.first_token_s = now - tm.t_request
                if tok == cfg.stop_speech:
                    self.stopped_on_eos = True
                    break
                tm.tokens += 1
                # BOS or padding ids are fed back (as the official loop does) but never vocoded.
                if tok < cfg.num_valid_speech:
                    self.tokens.append(tok)
                    t_voc = time.perf_counter()
                    audio = vocoder.push([tok])
                    if audio is not None:
                        yield self._chunk(audio, vocoder, guard, t_voc, is_last=False)
                if step + 1 < max_new:
                    # Vocode first, then step: on the first chunk this keeps the next forward
                    # off the time-to-first-audio path.
                    t_step = time.perf_counter()
                    logits, attn = decode_step(self.t3, tok_t, step + 1, L + step, slot.cache, probes)
                    if guard is not None:
                        guard.observe(attn, tok_t)
                    tm.decode_s += time.perf_counter() - t_step
            t_voc = time.perf_counter()
            tail = vocoder.flush()
            yield self._chunk(tail, vocoder, guard, t_voc, is_last=True)
        finally:
            slot.release()
            if guard is not None:
                self.guard_counts = guard.counts()

    def _chunk(self, audio: torch.Tensor, vocoder: StreamingToWav, guard, t_voc: float,
               is_last: bool) -> SessionChunk:
        tm = self.timings
        now = time.perf_counter()
        tm.vocoder_s += now - t_voc
        if tm.first_chunk_vocoder_s is None:
            tm.first_chunk_vocoder_s = now - t_voc
            if vocoder.last_timing is not None:
                tm.first_chunk_flow_ms = vocoder.last_timing.flow_ms
                tm.first_chunk_hift_ms = vocoder.last_timing.hift_ms
        return SessionChunk(audio.detach().float().cpu().numpy().reshape(-1),
                            guard.text_position if guard is not None else 0, is_last, now)
