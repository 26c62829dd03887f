"""The scheduler's vocoder thread: every session's streaming token2wav, first chunks first.

T3 decodes all sessions in one engine thread; turning their tokens into audio (S3Gen flow +
HiFT, per session) runs here so that it overlaps the next decode steps (on CUDA on a stream of
its own, so the kernels of both can interleave on the device). Work is one item per accepted
token (pushed one at a time, exactly as a solo session pushes them, so chunks are cut at the same
token counts) and a final flush. Sessions still waiting for their first chunk go before those in
steady state; within a session the order of its items is kept. Chunks, the end marker or an
error go to the session's own output queue.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from contextlib import nullcontext
from queue import SimpleQueue

import torch

from .session import Session

__all__ = ["END", "VocoderTask", "VocoderWorker"]

END = object()  # the last item of every output queue that ends normally or on cancel
_FLUSH = object()


class VocoderTask:
    """One session's vocoder work. `ready`: a CUDA event recorded after the session's vocoder
    state was made on the engine's stream; this thread's stream waits for it before first use."""

    def __init__(self, session: Session, out: SimpleQueue, ready: torch.cuda.Event | None = None):
        self.session, self.out, self.ready = session, out, ready
        self.pending: deque = deque()  # (token id, guard position tensor or None) ... then _FLUSH
        self.queued = False  # in the worker's heap
        self.first_out = False  # a non-empty chunk was delivered
        self.stopped = False  # cancelled, failed or closed: drop what is left
        self.failed = False  # this thread raised for the session (the scheduler removes it)


class VocoderWorker:
    def __init__(self, device: torch.device):
        self._heap: list[tuple[int, int, VocoderTask]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._closed = False
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._thread = threading.Thread(target=self._loop, name="nutq-vocoder", daemon=True)
        self._thread.start()

    def push(self, task: VocoderTask, tok: int, position: torch.Tensor | None) -> None:
        self._add(task, (tok, position))

    def flush(self, task: VocoderTask) -> None:
        """The session has drawn its last token: render the rest, then end its output."""
        self._add(task, _FLUSH)

    @property
    def backlog(self) -> int:
        """Sessions with vocoder work waiting."""
        with self._cv:
            return len(self._heap)

    def close(self, error: BaseException) -> None:
        """Stop after the item in progress; sessions with work left get `error`."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join()
        with self._cv:
            for _, _, task in self._heap:
                if not task.stopped:
                    task.stopped = True
                    task.out.put(error)
            self._heap.clear()

    def _add(self, task: VocoderTask, item) -> None:
        with self._cv:
            task.pending.append(item)
            self._enqueue(task)

    def _enqueue(self, task: VocoderTask) -> None:
        # Priority 0 until the first audio is out: a newcomer's first chunk is what its listener
        # waits for, while sessions in steady state have buffered audio to play meanwhile.
        if task.pending and not task.queued and not task.stopped:
            heapq.heappush(self._heap, (int(task.first_out), next(self._seq), task))
            task.queued = True
            self._cv.notify()

    def _loop(self) -> None:
        ctx = torch.cuda.stream(self._stream) if self._stream is not None else nullcontext()
        with ctx:
            while True:
                with self._cv:
                    while not self._heap and not self._closed:
                        self._cv.wait()
                    if self._closed:
                        return
                    _, _, task = heapq.heappop(self._heap)
                    task.queued = False
                    item = task.pending.popleft()
                if not task.stopped:
                    self._run(task, item)
                with self._cv:
                    self._enqueue(task)  # one item at a time: priorities are re-read after each

    def _run(self, task: VocoderTask, item) -> None:
        s = task.session
        try:
            if task.ready is not None:
                self._stream.wait_event(task.ready)
                task.ready = None
            if item is _FLUSH:
                last = s.flush()  # decoding is over: the guard's position is final
                task.stopped = True  # nothing may follow END
                task.out.put(last)
                task.out.put(END)
                return
            chunk = s.vocode(*item)
            if chunk is not None:
                task.first_out = task.first_out or len(chunk.audio) > 0
                task.out.put(chunk)
        except Exception as e:  # noqa: BLE001 - this session fails, the others go on
            task.failed = task.stopped = True
            task.out.put(e)
