"""Streams of audio chunks over phrases: `SpeechStream` (iterator) and `AsyncSpeechStream`.

A request is cut into phrases up front (tokenized then too, so bad text fails before any audio);
phrases are spoken one after another by one `Session` each, and their chunks form one stream
with a continuous index. Every phrase is decoded by the engine's scheduler; its vocoder thread
hands each chunk straight to the consumer: into a queue the sync iterator reads, or onto the
event loop (`call_soon_threadsafe`) for the async one, with no thread of the stream's own in
between. The next phrase is queued (ahead of new requests) when the consumer reaches the end of
the previous one. Either way `cancel()` stops generation before the next decode step.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .session import Session, SessionChunk, SessionTimings
from .chunk_queue import ChunkQueue, LoopChunkQueue

if TYPE_CHECKING:
    from .phrases import Spoken

__all__ = ["AudioChunk", "SpeechStream", "AsyncSpeechStream", "Phrase", "Runner"]


@dataclass(frozen=True)
class Phrase:
    text: str  # as the user wrote it (a slice of the request)
    start: int  # character offset of `text` in the request
    ids: object  # torch (T,) text ids with SOT/EOT
    # what T3 reads (the text `ids` encode, before the final "." the planner may add), with each
    # character's span in `text`: computed once by the planner, read by word timestamps too
    spoken: Spoken | None = None


@dataclass(frozen=True)
class AudioChunk:
    audio: np.ndarray  # float32 mono
    sample_rate: int
    index: int  # 0, 1, 2, ... across the whole request
    is_final: bool  # the last chunk of the request
    phrase_index: int
    text_position: int  # the alignment guard's position in the phrase's text tokens (0 without a guard)
    t_since_request: float  # seconds from the request to this chunk being ready
    first_audio_latency: float | None  # seconds from the request to the first non-empty chunk

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


Runner = Callable[..., "object"]  # (session, continuation, out) -> the session's chunks (a scheduler's `run`)


class SpeechStream:
    """The chunks of one request: `for chunk in stream` in a thread, or `async for chunk in
    stream` on an event loop (one or the other). `cancel()` may be called from any thread;
    iteration then ends within one decode step. `close()` (or `await aclose()`) also waits until
    the engine has let go of the session. `timings` has one `SessionTimings` per phrase started.

    `runner(session, continuation, out)` queues one phrase's session and returns its chunks
    (`Scheduler.run`); `continuation` is True for every phrase after the first, whose listener is
    already hearing this stream, so the scheduler lets it go before newly arrived requests.
    `limit`: chunks the engine may have ready ahead of this consumer (None: the scheduler's bound)."""

    def __init__(self, phrases: list[Phrase], make_session: Callable[[Phrase], Session], sample_rate: int,
                 t_request: float | None = None, runner: Runner | None = None, limit: int | None = None):
        if runner is None:
            raise TypeError("a SpeechStream needs a runner (the engine's scheduler)")
        self.phrases = phrases
        self._make_session = make_session
        self._runner = runner
        self.sample_rate = sample_rate
        self.limit = limit
        self.t_request = time.perf_counter() if t_request is None else t_request
        self.timings: list[SessionTimings] = []
        self.sessions: list[Session] = []
        self.first_audio_latency: float | None = None
        self._cancel = threading.Event()
        self._phrase = 0  # the phrase being spoken (or next to start)
        self._chunks = None  # its chunks, while it runs
        self._index = 0
        self._ended = False

    def cancel(self) -> None:
        self._cancel.set()
        for s in self.sessions[-1:]:
            s.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    # ------------------------------------------------------------------ sync

    def __iter__(self) -> Iterator[AudioChunk]:
        return self

    def __next__(self) -> AudioChunk:
        while True:
            chunks = self._next_phrase(ChunkQueue)
            if chunks is None:
                raise StopIteration
            try:
                c = next(chunks)
            except StopIteration:
                self._phrase_done()
                continue
            except BaseException:
                self.close()
                raise
            out = self._audio_chunk(c)
            if out is not None:
                return out

    def close(self) -> None:
        """Stop and release everything now (also what breaking out of a for loop leads to)."""
        self.cancel()
        self._ended = True
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            chunks.close()

    # ------------------------------------------------------------------ async

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self

    async def __anext__(self) -> AudioChunk:
        while True:
            chunks = self._next_phrase(self._loop_queue)
            if chunks is None:
                raise StopAsyncIteration
            try:
                c = await anext(chunks)
            except StopAsyncIteration:
                self._phrase_done()
                continue
            except BaseException:
                await self.aclose()
                raise
            out = self._audio_chunk(c)
            if out is not None:
                return out

    async def aclose(self) -> None:
        self.cancel()
        self._ended = True
        chunks, self._chunks = self._chunks, None
        if chunks is not None:
            await chunks.aclose()

    def _loop_queue(self) -> LoopChunkQueue:
        return LoopChunkQueue(asyncio.get_running_loop(), self.limit)

    # ------------------------------------------------------------------ phrases

    def _next_phrase(self, make_queue):
        """The running phrase's chunks, the next phrase queued if none runs; None at the end."""
        if self._chunks is not None:
            return self._chunks
        if self._ended or self._cancel.is_set() or self._phrase >= len(self.phrases):
            self._ended = True
            return None
        p_idx = self._phrase
        session = self._make_session(self.phrases[p_idx])
        session.timings = SessionTimings(self.t_request if p_idx == 0 else time.perf_counter())
        self.sessions.append(session)
        self.timings.append(session.timings)
        if self._cancel.is_set():  # cancel() raced with the append
            session.cancel()
        self._chunks = self._runner(session, p_idx > 0, make_queue())
        return self._chunks

    def _phrase_done(self) -> None:
        self._chunks = None  # its session has ended: the engine let go of it before END
        self._phrase += 1

    def _audio_chunk(self, c: SessionChunk) -> AudioChunk | None:
        last_phrase = self._phrase == len(self.phrases) - 1
        if self._cancel.is_set() or (len(c.audio) == 0 and not (c.is_last and last_phrase)):
            return None  # an empty flush between phrases carries nothing
        t = c.t_ready - self.t_request
        if self.first_audio_latency is None and len(c.audio) > 0:
            self.first_audio_latency = t
        chunk = AudioChunk(c.audio, self.sample_rate, self._index, c.is_last and last_phrase, self._phrase,
                           c.text_position, t, self.first_audio_latency)
        self._index += 1
        return chunk


class AsyncSpeechStream:
    """`async for chunk in AsyncSpeechStream(stream, max_ahead)`: `stream` read on the event loop,
    with at most `max_ahead` chunks made ahead of the consumer (a consumer that stops taking, e.g.
    its client stopped reading, pauses its session instead of letting it decode the request into
    memory). Cancelling the consuming task, `await aclose()` or `cancel()` stop it within one step."""

    def __init__(self, stream: SpeechStream, max_ahead: int | None = None):
        if max_ahead is not None and max_ahead < 1:
            raise ValueError(f"max_ahead must be >= 1 or None, got {max_ahead}")
        stream.limit = max_ahead
        self.stream = stream

    def cancel(self) -> None:
        self.stream.cancel()

    def __aiter__(self) -> "AsyncSpeechStream":
        return self

    async def __anext__(self) -> AudioChunk:
        try:
            return await anext(self.stream)
        except asyncio.CancelledError:
            self.cancel()
            raise

    async def aclose(self) -> None:
        await self.stream.aclose()
