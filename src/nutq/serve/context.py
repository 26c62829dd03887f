"""`ServerContext`: everything one app shares between its endpoints, and `open_stream`, the one
way every protocol starts a synthesis.

`open_stream` admits the stream (drain state, concurrency per client and in total), resolves the
voice, starts the engine and waits for the first chunk, so that every error in starting (unknown
voice, bad text, all slots busy) is raised before a protocol has sent anything. The `LiveStream`
it returns is an async iterator of `AudioChunk`s that records the stream's metrics and gives its
admission back on every way out (finished, failed, cancelled, client gone).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from dataclasses import replace

from ..engine.engine import Engine
from ..engine.request import SynthesisRequest
from ..engine.stream import AsyncSpeechStream, AudioChunk, Phrase
from .config import ServeConfig
from .errors import ApiError, api_error_from
from .heap import HeapTrimmer
from .limits import StreamLease, StreamLimiter
from .metrics import Metrics
from .voice_names import check_aliases

__all__ = ["ServerContext", "LiveStream", "StreamOptions", "RECENT_LATENCIES"]

RECENT_LATENCIES = 1000  # streams in ServerContext.recent_latencies

log = logging.getLogger(__name__)


StreamOptions = SynthesisRequest  # what a protocol asks of one synthesis; `voice` is a voice id there


@dataclass
class _Readiness:
    ready: bool = False
    reason: str = "warming up"


@dataclass
class ServerContext:
    engine: Engine
    config: ServeConfig
    metrics: Metrics = field(default_factory=Metrics)
    readiness: _Readiness = field(default_factory=_Readiness)
    draining: bool = False

    def __post_init__(self):
        from ..tts import TTS

        if isinstance(self.engine, TTS):  # the library facade: serve the engine it wraps
            self.engine = self.engine.engine
        check_aliases(self.config.voice_aliases, (v.id for v in self.engine.voices.list()))
        total = self.config.max_streams or self.engine.capacity
        self.metrics.watch_engine(self.engine.stats)
        per_key = self.config.streams_per_key(total)
        self.limiter = StreamLimiter(total, per_key, self.config.retry_after_s)
        self.live: set[LiveStream] = set()
        # streams whose handler has not yet sent its client the last message (see LiveStream.told)
        self.telling: set[LiveStream] = set()
        self.heap = HeapTrimmer.for_this_process()
        # First-audio latencies (s) of the latest streams of every protocol, newest last: the
        # window the seed protocol's GET /latency summarizes (Prometheus keeps only buckets).
        self.recent_latencies: deque[float] = deque(maxlen=RECENT_LATENCIES)

    def check_text(self, text: str) -> None:
        if len(text) > self.config.max_input_chars:
            raise ApiError(400, f"input is {len(text)} characters; the limit is {self.config.max_input_chars}",
                           code="input_too_long", param="input")

    def admit(self, client: str) -> StreamLease:
        if self.draining:
            raise ApiError(503, "server is shutting down; retry on another instance", code="draining",
                           headers={"Retry-After": str(self.config.retry_after_s)})
        return self.limiter.acquire(client)

    async def open_stream(self, opts: StreamOptions, *, client: str, protocol: str,
                          phrases: list[Phrase] | None = None) -> "LiveStream":
        """Start speaking `opts`; returns once the first chunk is ready. Raises `ApiError`.
        `phrases`: its plan, when the protocol made it already (`Engine.phrases`)."""
        t0 = time.perf_counter()
        try:
            self.check_text(opts.text)
            if opts.params.max_new_tokens > self.config.max_new_tokens:
                raise ApiError(400, f"max_tokens must be <= {self.config.max_new_tokens}", code="invalid_value",
                               param="max_tokens")
            lease = self.admit(client)
        except ApiError as e:
            self.metrics.error(e)
            raise
        try:
            voice = await asyncio.to_thread(self.engine.voices.get, opts.voice if opts.voice is not None else "default")
            request = replace(opts, voice=voice, language=opts.language or self.config.default_language)
            stream = await asyncio.to_thread(self.engine.stream, request, None, phrases)
            inner = AsyncSpeechStream(stream, max_ahead=self.config.stream_buffer_chunks)
        except BaseException as e:
            lease.release()
            raise self._client_error(e) from e
        live = LiveStream(self, inner, lease, protocol, t0, request)
        try:
            await live._prime()
        except BaseException as e:
            await live.aclose()
            live.told()  # never handed to a protocol: its handler reports the error as a refusal
            raise self._client_error(e) from e
        return live

    def _client_error(self, e: BaseException) -> BaseException:
        if not isinstance(e, Exception):
            return e  # cancellation and exits pass through unchanged
        err = api_error_from(e, self.config.retry_after_s)
        self.metrics.error(err)
        return err


class LiveStream:
    """`async for chunk in live`: the engine's chunks, the first one already waiting.

    `cancel()` (any time, e.g. barge-in) stops generation before the next decode step; `aclose()`
    also waits for the worker to let go of its KV slot. `told()`: the protocol handler has sent its
    client the last thing it will for this stream (its last audio, an error, `done`, a close, the
    end of a body); a drain waits for it before shutdown closes the sockets. `abort(err)` is the server's own cancel
    (the drain deadline): iteration then raises `err` instead of ending, so that no protocol
    presents the cut-off audio as complete. Metrics are recorded once, at the end: a stream that
    was cancelled or aborted counts as cancelled, never as completed.
    """

    def __init__(self, ctx: ServerContext, inner: AsyncSpeechStream, lease: StreamLease, protocol: str,
                 t0: float, request: SynthesisRequest):
        self.ctx, self.inner, self.lease, self.protocol, self.t0 = ctx, inner, lease, protocol, t0
        self.request = request  # what the engine was asked: the encoders read its `output`
        self.first: AudioChunk | None = None
        self.audio_s = 0.0
        self.error: Exception | None = None
        self.aborted: ApiError | None = None
        self._cancelled = False
        self._closed = False
        self._ended = False
        self._told = asyncio.Event()
        ctx.live.add(self)
        ctx.telling.add(self)
        ctx.metrics.active.inc()

    async def _prime(self) -> None:
        self.first = await anext(self.inner)
        self.audio_s += self.first.duration

    @property
    def stream(self):
        """The engine's `SpeechStream` (phrases, sessions, timings)."""
        return self.inner.stream

    @property
    def first_audio_latency(self) -> float | None:
        """Seconds from the request reaching the server to its first audio being ready (None before)."""
        s = self.inner.stream
        if s.first_audio_latency is None:
            return None
        # the engine measures from its own request time; add what the server spent before it
        return s.first_audio_latency + (s.t_request - self.t0)

    def __aiter__(self) -> "LiveStream":
        return self

    async def __anext__(self) -> AudioChunk:
        if self.first is not None:
            chunk, self.first = self.first, None
            return chunk
        if self._closed:
            if self.aborted is not None:  # closed by the drain itself while this consumer was busy
                raise self.aborted
            raise StopAsyncIteration
        try:
            chunk = await anext(self.inner)
        except StopAsyncIteration:
            self._ended = not self._cancelled  # a cancelled engine stream also just ends
            await self.aclose()
            if self.aborted is not None:
                raise self.aborted from None
            raise
        except Exception as e:
            self.error = e
            await self.aclose()
            raise self.ctx._client_error(e) from e
        self.audio_s += chunk.duration
        return chunk

    def cancel(self) -> None:
        self._cancelled = True
        self.inner.cancel()

    def abort(self, err: ApiError) -> None:
        """Cancel for the server's own reason: the consumer gets `err` instead of the stream's end."""
        self.aborted = err
        self.cancel()

    def told(self) -> None:
        self._told.set()
        self.ctx.telling.discard(self)

    async def wait_told(self) -> None:
        await self._told.wait()

    async def aclose(self) -> None:
        """Stop (if still running), wait for the engine to release the session, record metrics."""
        if self._closed:
            return
        self._closed = True
        self.inner.cancel()
        try:
            await self.inner.aclose()
        finally:
            self.lease.release()
            self.ctx.live.discard(self)
            self.ctx.metrics.active.dec()
            self._record()
            self.ctx.heap.after_stream()  # the stream's buffers are garbage now: give them back

    def _record(self) -> None:
        m, s = self.ctx.metrics, self.inner.stream
        outcome = "failed" if self.error is not None else "completed" if self._ended else "cancelled"
        m.streams.labels(self.protocol, outcome).inc()
        latency = self.first_audio_latency
        if latency is not None:
            m.ttfa.labels(self.protocol).observe(latency)
            self.ctx.recent_latencies.append(latency)
        wall = time.perf_counter() - self.t0
        if self._ended and self.audio_s > 0:
            m.rtf.observe(wall / self.audio_s)
        for tm in s.timings:
            if tm.tokens and tm.decode_s > 0:
                m.tokens_per_s.observe(tm.tokens / tm.decode_s)
        for tm in s.timings:  # 0 without the scheduler: there a full pool refuses at once
            m.queue_wait.observe(tm.queue_s)
        for session in s.sessions:
            for kind, n in session.guard_counts.items():
                if n:
                    m.guard.labels(kind).inc(n)
