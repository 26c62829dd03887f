"""Streaming token -> waveform: S3Gen's flow and HiFT run on a growing token prefix, chunk by chunk.

Scheme (one `StreamingToWav` per utterance):

- Flow. Every render re-runs the flow on voice prompt ++ all tokens so far (its attention is
  bidirectional, so there is no cache to extend), with `finalize=False` until EOS: the last 3
  look-ahead tokens' 6 mel frames are held back until their right context exists. The flow noise is
  ONE tensor drawn when the session starts, covering prompt + `max_tokens` frames, so a frame gets
  the same noise in every render and in an offline render of the same tokens.
- Vocoder. HiFT renders the mel from `context_frames` before the first unreleased frame to the end
  of the current mel. Its excitation (the hn-NSF source) is built as one continuous signal: samples
  that earlier renders used are reused as they were, new ones continue every harmonic's phase from
  where the used ones ended, and the source noise is a fixed function of the absolute sample
  position. With one render this is exactly the offline source.
- Seams. Each render releases audio up to `holdback_frames` before its end (rounded down to whole
  tokens, so every chunk is a multiple of 960 samples) and keeps the next `crossfade_frames` of
  audio; the next render's first frames are cross-faded with them (raised cosine, gains summing to
  1). Both renders use the same source there, so the fade mixes two renders of the same excitation.
- The official trim fade (20 ms silence, 20 ms rise) applies at absolute sample 0 only, i.e. to
  the first chunk. EOS: `flush()` renders with `finalize=True` and releases everything, so the
  stream holds exactly 960 samples per token.
- Batching. A render is `plan()` (the flow's inputs, a `FlowRequest`), the flow, then `finish()`
  (mel -> audio). `push`/`flush` run the flow alone (`flow_mel`); a caller holding renders of
  several sessions runs their flows as one call (`flow_mels`: rows with their own voice, length
  and finalize flag, padding isolated) and finishes each session on its own. A row of that call
  equals the solo flow up to float rounding (tests/test_vocoder_batch.py).

Measured against an offline render of the same tokens with the same noise (tests/test_token2wav.py,
tiny random S3Gen, 1 s prompt, default schedule and seams):
- one chunk (schedule longer than the utterance): bit-identical to the offline output;
- several chunks: max |stream - offline| 1.44 on audio of std 0.32 (60 tokens). Nearly all of it
  comes from (1) the flow re-encoding a growing prefix: its attention is bidirectional, so the
  log-mel of released frames differs from the final mel (max 1.8, mean 0.38 in the first chunks;
  max 0.07, mean 0.01 once 90 tokens are known). Random weights exaggerate this; (2) HiFT chunk
  edges: with the flow held fixed the stream equals the offline audio (< 1e-3) except in the 12
  frames before each render's end (HiFT's receptive field), where max |diff| is 0.39.
- seams: with the flow held fixed, the relative error against offline within ±1 frame of a seam is
  0.07-0.11 (separately vocoded chunks joined end to end: 0.85-0.91); with the real flow, the
  energy at seams is within -0.5..+0.9 dB of offline (joined end to end: -2.2..-4.6 dB dips).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..audio.fade import trim_fade_curve
from ..errors import EngineError
from ..models.s3gen.cfm import Solver
from ..models.s3gen.model import RefDict, S3Gen
from ..models.s3gen.source import draw_source_randomness
from ..rates import FRAMES_PER_TOKEN
from .chunking import ChunkSchedule, SeamConfig
from .stage_clock import StageClock, lap_ms, ms_between

__all__ = ["ChunkSchedule", "SeamConfig", "ChunkTiming", "FlowRequest", "SessionSource", "StreamingToWav",
           "Token2WavError", "flow_mel", "flow_mels", "SAMPLES_PER_FRAME", "SAMPLES_PER_TOKEN"]

SAMPLES_PER_FRAME = 480  # 24 kHz / 50 mel frames per second
SAMPLES_PER_TOKEN = SAMPLES_PER_FRAME * FRAMES_PER_TOKEN
NOISE_BLOCK = 10 * SAMPLES_PER_TOKEN  # source noise is drawn in blocks of 0.4 s, each from its own seed


class Token2WavError(EngineError, ValueError):
    """Misuse of a streaming token2wav session (bad ids, too many tokens, use after flush)."""


@dataclass(frozen=True)
class ChunkTiming:
    """One render: which tokens it saw, what it released, and where the time went (milliseconds)."""

    index: int
    tokens: int  # tokens received when it ran
    finalize: bool
    mel_frames: int  # frames the flow produced (new tokens only)
    hift_frames: int  # frames HiFT rendered (left context included)
    samples: int  # samples released by this render
    flow_ms: float
    hift_ms: float


@dataclass(frozen=True)
class FlowRequest:
    """The flow inputs of one render: voice prompt ++ `tokens`, this session's noise."""

    tokens: torch.Tensor  # (1, Tn) every token received so far, on the device
    ref: RefDict
    finalize: bool
    noise: torch.Tensor  # (1, 80, 2·(Tp + max_tokens))
    solver: Solver  # how the flow is integrated (EulerCFG / MeanFlowEuler); equal solvers batch together


def flow_mel(s3gen: S3Gen, request: FlowRequest) -> torch.Tensor:
    """One render's flow alone: (1, 80, 2·Tn), 6 frames fewer when not finalized."""
    return s3gen.flow_mel(request.tokens, request.ref, finalize=request.finalize, noise=request.noise,
                          solver=request.solver)


def _device_ints(values: list[int], device: torch.device) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.long)
    # A pinned source makes the copy asynchronous: no host sync with the kernels queued before it.
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t


@torch.inference_mode()
def flow_mels(s3gen: S3Gen, requests: Sequence[FlowRequest]) -> list[torch.Tensor]:
    """Several renders' flows as ONE `Flow.inference_packed` call; the i-th mel equals
    `flow_mel(s3gen, requests[i])` up to float rounding.

    Rows may mix voices (prompt lengths), token counts and finalize flags: each row is its own
    prompt ++ tokens, right-padded, and solves its own number of frames (6 fewer when not
    finalized), so the look-ahead cut is per row instead of "from the padded end". Noise rows are
    each session's own tensor, zero past its length (those frames are masked). All requests must
    use the same solver (one solver runs them all: group renders by `request.solver` first).
    """
    if not requests:
        return []
    solvers = {r.solver for r in requests}
    if len(solvers) > 1:
        raise ValueError(f"one batched flow call runs one solver; requests ask for {sorted(map(repr, solvers))}")
    flow = s3gen.flow
    cfg = flow.cfg
    dev, dtype = flow.encoder_proj.weight.device, flow.encoder_proj.weight.dtype
    n_prompt = [r.ref.prompt_feat.size(1) for r in requests]  # prompt mel frames, cut off at the end
    lens = [r.ref.prompt_token.size(1) + r.tokens.size(1) for r in requests]
    mel_lens = [cfg.token_mel_ratio * n - (0 if r.finalize else cfg.lookahead_frames) for r, n in zip(requests, lens)]
    b, t_mel = len(requests), max(mel_lens)
    tokens = torch.zeros(b, max(lens), dtype=torch.long, device=dev)  # (B, T)
    cond = torch.zeros(b, cfg.n_mels, t_mel, dtype=dtype, device=dev)  # (B, 80, T_mel)
    noise = torch.zeros(b, cfg.n_mels, t_mel, dtype=dtype, device=dev)
    for i, (r, n, m) in enumerate(zip(requests, lens, mel_lens)):
        tp = r.ref.prompt_token.size(1)
        if r.noise.size(-1) < m:
            raise ValueError(f"row {i}: noise has {r.noise.size(-1)} frames, this render needs {m}")
        tokens[i, :tp] = r.ref.prompt_token[0]
        tokens[i, tp:n] = r.tokens[0]
        cond[i, :, :n_prompt[i]] = r.ref.prompt_feat[0].transpose(0, 1)
        noise[i, :, :m] = r.noise[0, :, :m]
    embedding = torch.cat([r.ref.embedding.reshape(1, -1) for r in requests])  # (B, 192)
    feat = flow.inference_packed(tokens, _device_ints(lens, dev), _device_ints(mel_lens, dev), cond, embedding,
                                 noise, solver=solvers.pop())  # (B, 80, T_mel)
    return [feat[i:i + 1, :, p:m] for i, (p, m) in enumerate(zip(n_prompt, mel_lens))]


def host_seed(generator: torch.Generator | None) -> int:
    """A 62-bit seed drawn from `generator` without reading the device. A CPU generator (None: the
    default one) draws it; a CUDA generator's state (seed, Philox offset) lives on the host, so
    the seed is derived from it and the offset advanced as one draw would: reading a CUDA draw
    back would wait for everything queued on the device, at every admission."""
    if generator is None or generator.device.type == "cpu":
        return int(torch.randint(0, 2**62, (1,), generator=generator))
    offset = generator.get_offset()
    generator.set_offset(offset + 4)  # Philox offsets advance in multiples of 4
    return hash((generator.initial_seed(), offset)) % 2**62


class SessionSource:
    """HiFT's excitation for one utterance, built render by render as offline builds it at once.

    Offline, harmonic k's phase at sample n is its random initial phase plus 2π·Σ_{m<=n} k·f0_m/sr,
    and the noise is one (1, H, L) draw. Here the samples up to `committed` are frozen (earlier
    renders used them and their audio was released or cross-faded); a render gets those back as
    they were and new samples from its own F0, with the initial phases advanced by the cycles the
    frozen samples completed. Noise for samples [a, b) is cut from blocks of NOISE_BLOCK samples,
    block i drawn from a CPU generator seeded with `seed + i`, so it depends only on the position.
    """

    def __init__(self, hift, generator: torch.Generator | None, device: torch.device):
        self.hift = hift
        self.n_harmonics = hift.m_source.num_harmonics
        self.sr = hift.cfg.sampling_rate
        self.device = device
        # Two draws from the session generator, made now so that other users of the generator
        # (T3 sampling) cannot change what the source gets later.
        self.phase, _ = draw_source_randomness(1, self.n_harmonics, 0, generator, device)  # (1, H, 1)
        self.seed = host_seed(generator)
        self.cycles = torch.zeros(1, self.n_harmonics, 1, dtype=torch.float64, device=device)  # at `committed`
        self.committed = 0  # samples [0, committed) are frozen
        self.kept_from = 0  # frozen samples [kept_from, committed) are still held
        self.kept = torch.zeros(1, 1, 0, device=device)
        self._blocks: dict[int, torch.Tensor] = {}

    def noise(self, start: int, stop: int) -> torch.Tensor:
        """(1, H, stop - start) standard normal noise for absolute samples [start, stop)."""
        first, last = start // NOISE_BLOCK, (stop - 1) // NOISE_BLOCK
        parts = []
        for i in range(first, last + 1):
            if i not in self._blocks:
                g = torch.Generator().manual_seed((self.seed + i) % 2**63)
                self._blocks[i] = torch.randn(1, self.n_harmonics, NOISE_BLOCK, generator=g).to(self.device)
            parts.append(self._blocks[i])
        for i in [i for i in self._blocks if i < first]:  # renders only move forward
            del self._blocks[i]
        return torch.cat(parts, dim=2)[:, :, start - first * NOISE_BLOCK: stop - first * NOISE_BLOCK]

    def render(self, f0: torch.Tensor, start_frame: int) -> torch.Tensor:
        """(1, T) F0 of frames [start_frame, start_frame + T) -> (1, 1, T·480) source for them."""
        start = start_frame * SAMPLES_PER_FRAME
        stop = start + f0.shape[1] * SAMPLES_PER_FRAME
        first_new = self.committed // SAMPLES_PER_FRAME - start_frame
        old = self.kept[:, :, start - self.kept_from:]
        if first_new == f0.shape[1]:
            return old
        # Offline adds 2π·cumsum(k·f0/sr) to the initial phase; continuing from `committed` adds
        # the cycles completed before it (mod 1; float64 so that long utterances stay exact).
        phase = self.phase + (2 * math.pi * self.cycles).float()  # exactly self.phase before any commit
        new = self.hift.source(f0[:, first_new:], phase=phase, noise=self.noise(self.committed, stop))
        return torch.cat([old.to(new.dtype), new], dim=2)

    def commit(self, source: torch.Tensor, f0: torch.Tensor, start_frame: int, upto_frame: int,
               keep_from_frame: int) -> None:
        """Freeze `source` (a `render` result for frames from `start_frame`) up to `upto_frame`;
        keep frozen samples from `keep_from_frame` on for the next render's left context."""
        newly = f0[0, self.committed // SAMPLES_PER_FRAME - start_frame: upto_frame - start_frame].double()
        k = torch.arange(1, self.n_harmonics + 1, dtype=torch.float64, device=f0.device)
        # Each frame's F0 is repeated over its 480 samples, so a frame adds 480·k·f0/sr cycles.
        self.cycles = torch.frac(self.cycles + (SAMPLES_PER_FRAME * k * newly.sum() / self.sr).reshape(1, -1, 1))
        self.committed = upto_frame * SAMPLES_PER_FRAME
        self.kept_from = keep_from_frame * SAMPLES_PER_FRAME
        self.kept = source[:, :, self.kept_from - start_frame * SAMPLES_PER_FRAME: self.committed
                           - start_frame * SAMPLES_PER_FRAME].clone()


class StreamingToWav:
    """One utterance's speech tokens -> 24 kHz audio chunks, as they arrive.

    `push(tokens)` returns the next chunk (float32, 1-D, CPU) when the schedule says one is due,
    else None; `flush()` at EOS returns the rest. Chunks concatenate to 960 samples per token.
    `timings` lists one `ChunkTiming` per render.
    """

    def __init__(self, s3gen: S3Gen, ref: RefDict, schedule: ChunkSchedule = ChunkSchedule(), *,
                 generator: torch.Generator | None = None, max_tokens: int = 1000, solver: Solver | None = None,
                 seams: SeamConfig = SeamConfig()):
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
        self.s3gen = s3gen
        self.schedule = schedule
        self.seams = seams
        self.max_tokens = max_tokens
        self.solver = solver or s3gen.default_solver()  # the decoder's official solver by default
        self.device = s3gen.flow.encoder_proj.weight.device
        self.ref = ref.to(self.device)
        self.vocab_size = s3gen.cfg.flow.vocab_size
        self.hift = s3gen.mel2wav
        flow_cfg = s3gen.cfg.flow
        if flow_cfg.token_mel_ratio != FRAMES_PER_TOKEN or self.hift.cfg.samples_per_frame != SAMPLES_PER_FRAME:
            raise ValueError("StreamingToWav assumes 2 mel frames per token and 480 samples per frame")
        # Frames a render cannot release yet: the look-ahead tokens' frames plus the held-back ones.
        self._delay_frames = flow_cfg.lookahead_frames + seams.holdback_frames

        # The session's randomness, all drawn now (see SessionSource for why).
        n_frames = FRAMES_PER_TOKEN * (self.ref.prompt_token.shape[1] + max_tokens)
        gen_device = generator.device if generator is not None else self.device
        self.flow_noise = torch.randn(1, flow_cfg.n_mels, n_frames, generator=generator,
                                      device=gen_device).to(self.device)  # (1, 80, 2·(Tp + max_tokens))
        self.source = SessionSource(self.hift, generator, self.device)

        n_fade = seams.crossfade_frames * SAMPLES_PER_FRAME
        ramp = torch.sin(0.5 * math.pi * (torch.arange(n_fade, dtype=torch.float64) + 0.5) / n_fade) ** 2
        self._fade_in = ramp.float().to(self.device)  # (n_fade,); the fade-out is 1 - fade_in
        self._trim = trim_fade_curve(device=self.device)  # official fade, at absolute sample 0

        self._tokens = torch.zeros(1, max_tokens, dtype=torch.long, device=self.device)
        self._n_tokens = 0
        self._released_frames = 0
        self._tail: torch.Tensor | None = None  # previous render's audio for the cross-fade frames
        self._boundaries = schedule.boundaries()
        self._next_audio_tokens = next(self._boundaries)
        self._finished = False
        self.timings: list[ChunkTiming] = []

    # ---------------------------------------------------------------- state

    @property
    def tokens_received(self) -> int:
        return self._n_tokens

    @property
    def samples_emitted(self) -> int:
        return self._released_frames * SAMPLES_PER_FRAME

    @property
    def next_due(self) -> int:
        """Tokens received at which `push` returns the next chunk."""
        return self._next_audio_tokens + math.ceil(self._delay_frames / FRAMES_PER_TOKEN)

    @property
    def last_timing(self) -> ChunkTiming | None:
        return self.timings[-1] if self.timings else None

    # ---------------------------------------------------------------- API

    def device_tensors(self) -> list[torch.Tensor]:
        """The tensors made at construction that later renders read: a caller that renders on
        another CUDA stream marks them used there (`Tensor.record_stream`), so the allocator does
        not hand their memory to the stream that made them while that stream's kernels still run."""
        ref = [t for t in vars(self.ref).values() if isinstance(t, torch.Tensor)]
        src = self.source
        return [self.flow_noise, self._fade_in, self._trim, self._tokens, src.phase, src.cycles, src.kept, *ref]

    def push(self, tokens: Sequence[int] | torch.Tensor) -> torch.Tensor | None:
        """Add speech tokens (ids < 6561; drop EOS/BOS first). Returns a new chunk if one is due."""
        if not self.add(tokens):
            return None
        return self._render(self.plan(finalize=False))

    def flush(self) -> torch.Tensor:
        """At EOS: render with the look-ahead resolved and return all remaining audio."""
        self._check_open()
        if self._n_tokens == 0:
            self._finished = True
            return torch.zeros(0)
        return self._render(self.plan(finalize=True))

    def add(self, tokens: Sequence[int] | torch.Tensor) -> bool:
        """Store speech tokens without rendering; True when a chunk is due (`plan(False)` next)."""
        self._check_open()
        ids = torch.as_tensor(tokens).reshape(-1)
        if ids.numel() == 0:
            return False
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise Token2WavError(f"speech tokens must be integers, got dtype {ids.dtype}")
        bad = (ids < 0) | (ids >= self.vocab_size)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise Token2WavError(
                f"speech token id {int(ids[i])} at position {i} of this push is outside [0, {self.vocab_size}); "
                "stop/start-of-speech ids must be dropped before vocoding"
            )
        n = self._n_tokens + ids.numel()
        if n > self.max_tokens:
            raise Token2WavError(f"{n} tokens exceed this session's max_tokens={self.max_tokens} "
                                 "(its noise was drawn for that many)")
        self._tokens[0, self._n_tokens: n] = ids.to(self.device)
        self._n_tokens = n
        return n >= self.next_due

    def plan(self, finalize: bool) -> FlowRequest:
        """The flow inputs of the render due now (`finalize=True`: the last one, at EOS)."""
        self._check_open()
        if self._n_tokens == 0 or not (finalize or self._n_tokens >= self.next_due):
            raise Token2WavError(f"no render is due at {self._n_tokens} tokens")
        return FlowRequest(self._tokens[:, : self._n_tokens], self.ref, finalize, self.flow_noise, self.solver)

    def _check_open(self) -> None:
        if self._finished:
            raise Token2WavError("this token2wav session was flushed; start a new one for the next utterance")

    # ---------------------------------------------------------------- rendering

    def _render(self, request: FlowRequest) -> torch.Tensor:
        clock = StageClock(self.device)
        t0 = clock.mark()
        mel = flow_mel(self.s3gen, request)
        return self.finish(request, mel, (t0, clock.mark()))

    @torch.inference_mode()
    def finish(self, request: FlowRequest, mel: torch.Tensor, flow_ms) -> torch.Tensor:
        """The audio of `request`'s render from its flow output `mel` (1, 80, R): HiFT over the new
        frames with this session's source, seams, release. `flow_ms` (milliseconds, or the flow's
        (start, end) `StageClock` marks, read here once the audio is on the host) is recorded in
        its timing."""
        if request.tokens.size(1) != self._n_tokens or self._finished:
            raise Token2WavError("this render plan is stale: tokens were added or the session was flushed since")
        finalize = request.finalize
        seams = self.seams
        start_released = self._released_frames
        clock = StageClock(self.device)
        t1 = clock.mark()
        n_mel = mel.shape[2]
        # Release whole tokens only, so every chunk is a multiple of 960 samples.
        # `next_due` guarantees end > start_released.
        end = n_mel if finalize else (n_mel - seams.holdback_frames) // FRAMES_PER_TOKEN * FRAMES_PER_TOKEN
        w0 = max(0, start_released - seams.context_frames)  # first frame HiFT renders
        mel_w = mel[:, :, w0:].to(self.s3gen.dtype)
        f0 = self.hift.f0(mel_w)  # (1, R - w0)
        source = self.source.render(f0, w0)
        wav = self.hift.decode(mel_w, source)[0].float()  # samples [w0·480, R·480)
        if w0 * SAMPLES_PER_FRAME < self._trim.numel():
            n = min(wav.numel(), self._trim.numel() - w0 * SAMPLES_PER_FRAME)
            wav[:n] *= self._trim[w0 * SAMPLES_PER_FRAME: w0 * SAMPLES_PER_FRAME + n]
        new = wav[(start_released - w0) * SAMPLES_PER_FRAME:]  # from the first unreleased sample
        if self._tail is not None:
            k = self._tail.numel()
            new[:k] = self._tail * (1 - self._fade_in[:k]) + new[:k] * self._fade_in[:k]
        n_out = (end - start_released) * SAMPLES_PER_FRAME
        out = new[:n_out]
        if finalize:
            self._finished = True
            self._tail = None
        else:
            n_fade = seams.crossfade_frames * SAMPLES_PER_FRAME
            self._tail = new[n_out: n_out + n_fade].clone()
            self.source.commit(source, f0, w0, end + seams.crossfade_frames, max(0, end - seams.context_frames))
            # Skip boundaries this render already covered (several tokens can arrive in one push).
            while self._next_audio_tokens * FRAMES_PER_TOKEN <= end:
                self._next_audio_tokens = next(self._boundaries)
        self._released_frames = end
        t2 = clock.mark()
        out = out.cpu()  # waits for the stream: every mark so far is done, so reading them costs no sync
        self.timings.append(ChunkTiming(len(self.timings), self._n_tokens, finalize, n_mel, n_mel - w0,
                                        out.numel(), lap_ms(flow_ms), ms_between(t1, t2)))
        return out
