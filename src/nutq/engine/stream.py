"""Streams of audio chunks over phrases: `SpeechStream` (iterator) and `AsyncSpeechStream`.

A request is cut into phrases up front (tokenized then too, so bad text fails before any audio);
phrases are spoken one after another by one `Session` each, and their chunks form one stream
with a continuous index. The sync stream generates only while the consumer asks for the next
chunk; the async one runs the sessions in a worker thread that stays ahead of the consumer, and
either way `cancel()` stops generation before the next decode step.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from .session import Session, SessionChunk, SessionTimings

__all__ = ["AudioChunk", "SpeechStream", "AsyncSpeechStream", "Phrase"]


@dataclass(frozen=True)
class Phrase:
    text: str  # as the user wrote it (a slice of the request)
    start: int  # character offset of `text` in the request
    ids: object  # torch (T,) text ids with SOT/EOT


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


def _run_alone(session: Session, continuation: bool) -> Iterator[SessionChunk]:
    return session.run()


class SpeechStream:
    """Iterate for `AudioChunk`s. `cancel()` may be called from any thread; iteration then ends
    within one decode step. `timings` has one `SessionTimings` per phrase started so far.
    `runner(session, continuation)` speaks one session (default `Session.run`, alone in the caller's
    thread; a `Scheduler.run` decodes it together with other streams' sessions). `continuation` is
    True for every phrase after the first: its listener is already hearing this stream, so a
    scheduler lets it go before newly arrived requests."""

    def __init__(self, phrases: list[Phrase], make_session: Callable[[Phrase], Session], sample_rate: int,
                 t_request: float | None = None,
                 runner: Callable[[Session, bool], Iterator[SessionChunk]] | None = None):
        self.phrases = phrases
        self._make_session = make_session
        self._runner = runner if runner is not None else _run_alone
        self.sample_rate = sample_rate
        self.t_request = time.perf_counter() if t_request is None else t_request
        self.timings: list[SessionTimings] = []
        self.sessions: list[Session] = []
        self.first_audio_latency: float | None = None
        self._cancel = threading.Event()
        self._gen = self._run()

    def cancel(self) -> None:
        self._cancel.set()
        for s in self.sessions[-1:]:
            s.cancel()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def __iter__(self) -> Iterator[AudioChunk]:
        return self

    def __next__(self) -> AudioChunk:
        return next(self._gen)

    def close(self) -> None:
        """Stop and release everything now (also what breaking out of a for loop leads to)."""
        self.cancel()
        self._gen.close()

    def _run(self) -> Iterator[AudioChunk]:
        index = 0
        for p_idx, phrase in enumerate(self.phrases):
            if self._cancel.is_set():
                return
            session = self._make_session(phrase)
            session.timings = SessionTimings(self.t_request if p_idx == 0 else time.perf_counter())
            self.sessions.append(session)
            self.timings.append(session.timings)
            if self._cancel.is_set():  # cancel() raced with the append
                return
            last_phrase = p_idx == len(self.phrases) - 1
            gen = self._runner(session, p_idx > 0)
            try:
                for c in gen:
                    if self._cancel.is_set():
                        return
                    if len(c.audio) == 0 and not (c.is_last and last_phrase):
                        continue  # an empty flush between phrases carries nothing
                    t = c.t_ready - self.t_request
                    if self.first_audio_latency is None and len(c.audio) > 0:
                        self.first_audio_latency = t
                    yield AudioChunk(c.audio, self.sample_rate, index, c.is_last and last_phrase, p_idx,
                                     c.text_position, t, self.first_audio_latency)
                    index += 1
            finally:
                gen.close()  # runs the session's finally: its KV slot goes back to the pool


class AsyncSpeechStream:
    """`async for chunk in stream`: a worker thread runs the sync stream ahead of the consumer.

    Cancelling the consuming task, `await aclose()` or `cancel()` stop the worker within one
    decode step. Errors raised by generation are re-raised to the consumer. `max_ahead` bounds the
    chunks made but not yet taken by the consumer: a consumer that stops taking (its client stopped
    reading) pauses the worker instead of letting it buffer the whole request (None: no bound)."""

    _END = object()
    _POLL_S = 0.05  # how often a worker paused by `max_ahead` checks for a cancel

    def __init__(self, stream: SpeechStream, max_ahead: int | None = None):
        if max_ahead is not None and max_ahead < 1:
            raise ValueError(f"max_ahead must be >= 1 or None, got {max_ahead}")
        self.stream = stream
        self._queue: asyncio.Queue | None = None
        self._thread: threading.Thread | None = None
        self._room = threading.Semaphore(max_ahead) if max_ahead is not None else None

    def cancel(self) -> None:
        self.stream.cancel()

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._queue = q = asyncio.Queue()

        def put(item) -> None:
            try:
                loop.call_soon_threadsafe(q.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self.stream.cancel()

        def wait_for_room() -> bool:
            while not self._room.acquire(timeout=self._POLL_S):
                if self.stream.cancelled:
                    return False
            return True

        def work() -> None:
            try:
                for chunk in self.stream:
                    if self._room is not None and not wait_for_room():
                        return
                    put(chunk)
            except BaseException as e:  # noqa: BLE001 - handed to the consumer
                put(e)
            finally:
                self.stream.close()
                put(self._END)

        self._thread = threading.Thread(target=work, name="nutq-stream", daemon=True)
        self._thread.start()

    def __aiter__(self) -> "AsyncSpeechStream":
        return self

    async def __anext__(self) -> AudioChunk:
        if self._queue is None:
            self._start()
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            self.cancel()
            raise
        if item is self._END:
            self._queue.put_nowait(self._END)  # later calls keep ending
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        if self._room is not None:
            self._room.release()
        return item

    async def aclose(self) -> None:
        self.cancel()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
