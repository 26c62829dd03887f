"""The scheduler's vocoder thread: every session's streaming token2wav, first chunks first.

T3 decodes all sessions in one engine thread; turning their tokens into audio (S3Gen flow +
HiFT, per session) runs here so that it overlaps the next decode steps (on CUDA on a stream of
its own, so the kernels of both can interleave on the device). Work is one item per accepted
token (pushed one at a time, exactly as a solo session pushes them, so chunks are cut at the same
token counts) and a final flush. Sessions still waiting for their first chunk go before those in
steady state; within a session the order of its items is kept. Chunks, the end marker or an
error go to the session's own output queue.

Batching. Nearly all of a render's cost is the flow (10 CFM steps over the voice prompt and every
token so far). When the item taken next renders a chunk, every other session whose next item
also renders one joins it (in priority order, up to `max_batch` rows): their flows run as one
call (`token2wav.flow_mels`: any mix of voices, lengths and EOS flushes, each row with its own
noise), then each session finishes its chunk alone (HiFT with its own source, seams). A row
equals the session's solo render up to float rounding. If the batched call raises, every row is
retried alone, so a session whose render fails fails by itself.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from contextlib import nullcontext
from queue import SimpleQueue

import torch

from .session import Session
from .stage_clock import StageClock
from .token2wav import flow_mel, flow_mels

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
    """`max_batch`: most renders in one flow call (1: every render alone)."""

    def __init__(self, device: torch.device, max_batch: int = 8):
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        self.max_batch = max_batch
        self.batches = 0  # flow calls that carried more than one render
        self.batch_rows = 0  # renders those calls carried
        self.batch_retries = 0  # batched calls that raised, their rows then retried alone
        self._device = device
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
        # On this thread the current CUDA device is cuda:0 unless set: pin it to the models' device.
        on_cuda = self._stream is not None
        with torch.cuda.device(self._device) if on_cuda else nullcontext(), \
                torch.cuda.stream(self._stream) if on_cuda else nullcontext():
            while True:
                with self._cv:
                    while not self._heap and not self._closed:
                        self._cv.wait()
                    if self._closed:
                        return
                    group = [self._pop()]
                    if self._renders(*group[0]):
                        group += self._others_rendering(group[0][0])
                if len(group) > 1:
                    self._run_batch(group)
                elif not group[0][0].stopped:
                    self._run(*group[0])
                with self._cv:
                    for task, _ in group:
                        self._enqueue(task)  # one item at a time: priorities are re-read after each

    def _pop(self) -> tuple[VocoderTask, object]:
        _, _, task = heapq.heappop(self._heap)
        task.queued = False
        return task, task.pending.popleft()

    def _renders(self, task: VocoderTask, item) -> bool:
        """Does `item` run the flow? (Session state is read only by this thread: no lock needed for it.)"""
        return not task.stopped and task.session.renders(None if item is _FLUSH else item[0])

    def _others_rendering(self, first: VocoderTask) -> list[tuple[VocoderTask, object]]:
        """Under the lock: take the next item of each queued task whose next item renders, best
        priority first, up to `max_batch - 1` of them (same S3Gen: one flow call runs them)."""
        room = self.max_batch - 1
        chosen = []
        for entry in sorted(self._heap) if room else ():  # (priority, seq, task): seq is unique
            task = entry[2]
            if task.session.s3gen is first.session.s3gen and self._renders(task, task.pending[0]):
                chosen.append(entry)
                if len(chosen) == room:
                    break
        if not chosen:
            return []
        taken = {id(e[2]) for e in chosen}
        self._heap = [e for e in self._heap if id(e[2]) not in taken]
        heapq.heapify(self._heap)
        out = []
        for _, _, task in chosen:
            task.queued = False
            out.append((task, task.pending.popleft()))
        return out

    def _run(self, task: VocoderTask, item) -> None:
        s = task.session
        try:
            self._wait_ready(task)
            if item is _FLUSH:
                chunk = s.flush()  # decoding is over: the guard's position is final
            else:
                chunk = s.vocode(*item)
            self._deliver(task, item, chunk)
        except Exception as e:  # noqa: BLE001 - this session fails, the others go on
            self._fail(task, e)

    def _run_batch(self, group: list[tuple[VocoderTask, object]]) -> None:
        t_voc = time.perf_counter()
        rows = []  # (task, item, FlowRequest)
        for task, item in group:
            if task.stopped:
                continue
            try:
                self._wait_ready(task)
                rows.append((task, item, task.session.plan_chunk(None if item is _FLUSH else item[0])))
            except Exception as e:  # noqa: BLE001
                self._fail(task, e)
        # One batched call runs one solver: rows with different solvers (steps, CFG) go in groups.
        by_solver: dict = {}
        for row in rows:
            by_solver.setdefault(row[2].solver, []).append(row)
        for group_rows in by_solver.values():
            self._flow_group(group_rows, t_voc)

    def _flow_group(self, rows: list, t_voc: float) -> None:
        s3gen = rows[0][0].session.s3gen
        # Flow times as (start, end) marks on this stream, read when each chunk reaches the host
        # (stage_clock): no sync per stage.
        clock = StageClock(self._device)
        mels, lap = [None] * len(rows), None  # None: run that row's flow alone below
        if len(rows) > 1:  # the others may have stopped meanwhile
            t0 = clock.mark()
            try:
                mels = flow_mels(s3gen, [r for _, _, r in rows])
                self.batches += 1
                self.batch_rows += len(rows)
            except Exception:  # noqa: BLE001 - cannot tell whose row broke it: each row alone below
                self.batch_retries += 1
            lap = (t0, clock.mark())
        for (task, item, request), mel in zip(rows, mels):
            try:
                ms = lap
                if mel is None:
                    t1 = clock.mark()
                    mel = flow_mel(s3gen, request)
                    ms = (t1, clock.mark())
                position = None if item is _FLUSH else item[1]
                self._deliver(task, item, task.session.finish_chunk(request, mel, ms, t_voc, position))
            except Exception as e:  # noqa: BLE001 - this session fails, the others go on
                self._fail(task, e)

    def _wait_ready(self, task: VocoderTask) -> None:
        if task.ready is not None:
            self._stream.wait_event(task.ready)
            for t in task.session.vocoder_tensors():  # made on the engine's stream, used on this one
                t.record_stream(self._stream)
            task.ready = None

    @staticmethod
    def _deliver(task: VocoderTask, item, chunk) -> None:
        if item is _FLUSH:
            task.stopped = True  # nothing may follow END
            task.out.put(chunk)
            task.out.put(END)
        elif chunk is not None:
            task.first_out = task.first_out or len(chunk.audio) > 0
            task.out.put(chunk)

    @staticmethod
    def _fail(task: VocoderTask, error: Exception) -> None:
        task.failed = task.stopped = True
        task.out.put(error)
