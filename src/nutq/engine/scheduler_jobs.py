"""What the scheduler keeps per submitted session (`Job`), the iterator its consumer reads
(`Chunks`), the ids of one sampling call on their way to the host (`Draws`), and its counters
(`SchedulerStats`)."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

import torch

from .chunk_queue import ChunkQueue, LoopChunkQueue
from .session import Session, SessionChunk
from .spec_decode import SpecSession
from .vocoder_worker import END, VocoderTask

__all__ = ["Chunks", "Draws", "Job", "SchedulerStats"]


@dataclass(frozen=True)
class SchedulerStats:
    """A snapshot for /metrics. Counters are totals since the scheduler started."""

    queued: int  # sessions waiting for a KV slot
    active: int  # sessions decoding
    vocoder_backlog: int  # sessions with vocoder work waiting
    steps: int  # batched decode steps run
    step_rows: int  # sessions stepped, summed over steps
    tokens: int  # tokens drawn (first tokens from the prefill and EOS included)
    admitted: int
    rejected: int  # SchedulerBusy raised
    queue_wait_s_sum: float  # time admitted sessions waited for a slot
    queue_wait_s_max: float
    vocoder_batches: int  # flow calls that rendered chunks of several sessions at once
    vocoder_rows: int  # chunks those calls rendered
    vocoder_retries: int  # batched flow calls that raised; their rows were rendered alone
    spec_rounds: int = 0  # speculative rounds (one target forward each)
    spec_drafted: int = 0  # tokens the drafts proposed ...
    spec_tested: int = 0  # ... the target judged (up to each round's first rejection) ...
    spec_accepted: int = 0  # ... and accepted
    spec_emitted: int = 0  # tokens the rounds emitted (accepted + one resampled or bonus per round)

    @property
    def mean_batch(self) -> float:
        return self.step_rows / self.steps if self.steps else 0.0

    @property
    def mean_vocoder_batch(self) -> float:
        return self.vocoder_rows / self.vocoder_batches if self.vocoder_batches else 0.0

    @property
    def mean_queue_wait_s(self) -> float:
        return self.queue_wait_s_sum / self.admitted if self.admitted else 0.0

    @property
    def spec_acceptance_rate(self) -> float:
        return self.spec_accepted / self.spec_tested if self.spec_tested else 0.0  # SpecStats.acceptance_rate

    @property
    def spec_tokens_per_forward(self) -> float:
        return self.spec_emitted / self.spec_rounds if self.spec_rounds else 0.0


class Job:
    """A submitted session and what the engine knows about it."""

    def __init__(self, session: Session, t_submit: float, continuation: bool = False,
                 out: ChunkQueue | LoopChunkQueue | None = None):
        self.session = session
        self.t_submit = t_submit
        self.continuation = continuation
        self.out = out if out is not None else ChunkQueue()  # SessionChunk, exception, or END
        self.vocoding: VocoderTask | None = None  # made at admission
        self.spec: SpecSession | None = None  # its draft state, made at its first speculative round
        self.abandoned = False  # the consumer closed its iterator
        self.released = threading.Event()  # the engine is done with it: slot back, or never leased

    @property
    def leaving(self) -> bool:
        """Should leave at the next step boundary."""
        v = self.vocoding
        return self.abandoned or self.session.cancelled or (v is not None and v.failed)


class Chunks:
    """A session's chunks, read from its queue: iterate from a thread (`ChunkQueue`) or `async
    for` on the loop of a `LoopChunkQueue`. `close()` / `await aclose()` when leaving early."""

    def __init__(self, job: Job, cv: threading.Condition):
        self._job, self._cv, self._done = job, cv, False
        if isinstance(job.out, LoopChunkQueue):
            job.out.on_loop_closed = self._abandon

    def __iter__(self) -> "Chunks":
        return self

    def __next__(self) -> SessionChunk:
        if self._done:
            raise StopIteration
        return self._item(self._job.out.get(), StopIteration)

    def __aiter__(self) -> "Chunks":
        return self

    async def __anext__(self) -> SessionChunk:
        if self._done:
            raise StopAsyncIteration
        return self._item(await self._job.out.aget(), StopAsyncIteration)

    def _item(self, item, stop: type[Exception]) -> SessionChunk:
        if item is END or isinstance(item, BaseException):
            self._done = True
            if item is END:
                raise stop
            raise item
        return item

    def _abandon(self) -> None:
        self._done = True
        job = self._job
        if job.vocoding is not None:
            job.vocoding.stopped = True  # nobody will read what is left
        if not job.released.is_set():
            with self._cv:
                job.abandoned = True
                self._cv.notify()

    def close(self) -> None:
        """Leave now; returns once the engine has let go of the session's slot."""
        self._abandon()
        self._job.released.wait()

    async def aclose(self) -> None:
        self._abandon()
        if not self._job.released.is_set():  # the next step boundary: wait off the event loop
            await asyncio.to_thread(self._job.released.wait)



class Draws:
    """The ids one sampling call drew for `jobs`, on their way to the host: on CUDA a copy into
    pinned memory queued behind the sampling (no sync), read with `values()`. Once that returns,
    the device has computed everything these draws depended on, the guard positions included:
    the vocoder thread may read those from its own CUDA stream."""

    def __init__(self, jobs: list[Job], tokens: torch.Tensor, positions: torch.Tensor, t0: float):
        self.jobs, self.positions, self.t0 = jobs, positions, t0
        self._ready = None
        if tokens.device.type == "cuda":
            self._host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
            self._host.copy_(tokens, non_blocking=True)
            self._ready = torch.cuda.Event()
            self._ready.record()
        else:
            self._host = tokens

    def values(self) -> list[int]:
        if self._ready is not None:
            self._ready.synchronize()
        return self._host.tolist()
