"""One engine thread that owns T3 and decodes every active session in one batched step.

    submit ──► waiting line (bounded) ──► admitted when a KV slot is free: the newcomers of a
               step boundary prefilled (on CUDA in ONE forward), first tokens drawn in one call
           ──► active: each iteration, ONE step for all active sessions, then ONE sampling call
               (guards included) draws every session's next token, each with its own
               parameters, generator and guard state (`row_sampler`)
           ──► ids read on the host (`_settle`; on CUDA while the next forward runs), tokens to
               the vocoder thread (`vocoder_worker`), chunks to the session's queue

Every iteration of the engine loop is a step boundary: sessions that were cancelled, whose
consumer went away or whose vocoder failed leave there (their slot goes back to the pool), and
newcomers join there (prefilled before the step, so their first token is drawn and on its way to
the vocoder without waiting for the batch). A session's results do not depend on who else is in
the batch: sampling, guard and vocoder state are its own. With `LoopStep` its forward is the solo
`decode_step` on its own rows and (with `batch_prefill=False`) its prefill its solo one, so
tokens and audio equal a solo `Session.run()` bit for bit; the default `BatchedStep` (one forward
for all) and the batched prefill (padded prompts) differ from it by float rounding only (other
matmul shapes), which leaves the drawn tokens the same unless a draw sits on a rounding-sized edge.

Errors stay with their session: a failing prefill or vocoder fails that session's consumer only.
A failing batched forward or sampling call cannot be pinned on one session, so every session in
that step fails; the engine itself keeps serving the others.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import fields

import torch
import torch.nn.functional as F

from ..models.s3gen.model import S3Gen
from ..models.t3 import T3
from .alignment import OFFICIAL
from ..errors import BusyError, EngineError
from .batched_step import BatchedStep
from .chunk_queue import MAX_UNREAD_CHUNKS, ChunkQueue, LoopChunkQueue
from .decode import decode_step, prefill_many
from .kv_pool import ROWS_PER_SESSION, KVPool, PoolExhausted
from .row_sampler import RowSampler
from .sampling import to_device
from .scheduler_jobs import Chunks, Draws, Job, SchedulerStats
from .session import Session
from .spec_decode import SpecSession
from .speculative import SpecConfig, SpecStats
from .vocoder_worker import END, VocoderTask, VocoderWorker

__all__ = ["Scheduler", "SchedulerBusy", "SchedulerClosed", "SchedulerStats", "LoopStep"]

Probes = tuple[tuple[int, int], ...]
# Sessions prefilled in one forward at most: its scratch cache holds 2 rows per session of the
# longest prompt (the full-size T3 at ~200 prompt positions: ~25 MB per row in fp32).
PREFILL_BATCH = 8


class SchedulerBusy(PoolExhausted):
    """Every KV slot is leased and the waiting line is full: retry later (HTTP 429)."""


class SchedulerClosed(EngineError):
    """The scheduler was closed before this session finished."""


class LoopStep:
    """The reference step: each session's solo `decode_step` on its own pool rows, in turn.

    Same signature as `BatchedStep`; its outputs are bit-identical to solo runs, which makes it the
    baseline the batched forward is tested against. Attention rows are zero-padded to the longest."""

    def __init__(self, t3: T3, pool: KVPool, probes: Probes = ()):
        self.t3, self.pool, self.probes = t3, pool, probes

    def __call__(self, slots: Sequence[int], tokens: torch.Tensor, speech_pos: Sequence[int],
                 pos: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        outs = [decode_step(self.t3, tokens[i:i + 1], sp, p,
                            self.pool.cache.rows(s * ROWS_PER_SESSION, ROWS_PER_SESSION), self.probes)
                for i, (s, sp, p) in enumerate(zip(slots, speech_pos, pos, strict=True))]
        logits = torch.stack([o[0] for o in outs])  # (n, 2, V)
        if not self.probes:
            return logits, None
        S = max(pos) + 1
        attn = torch.stack([F.pad(a, (0, S - a.shape[-1])) for _, a in outs])  # (n, n_probes, 1, S)
        return logits, attn


class Scheduler:
    """Run sessions together: `for chunk in scheduler.run(session)`.

    `step(slots, tokens, speech_pos, pos) -> (logits (n, 2, V), probe attention (n, n_probes, 1, S)
    or None)` runs one decode step for several sessions (default: a `BatchedStep`, its CUDA graphs
    captured here, so build the scheduler at warm-up); it must have been built for `probes`, and
    sessions with a guard must use exactly those heads. At most `max_queue` sessions wait beyond
    the free slots (default: as many as the pool has slots); more are refused at once with
    `SchedulerBusy`. Up to `vocoder_batch` sessions' chunk renders run as one flow call (see
    `vocoder_worker`); default 8 on CUDA, 1 (each alone) on CPU, where the flow is compute-bound:
    a batched call costs as much as its rows alone, and more when their lengths differ (padding;
    benchmarks/vocoder_batch.py), while the first chunk in it waits for all rows.

    `batch_prefill` (default: on CUDA): sessions admitted at the same step boundary are prefilled
    in one forward (`decode.prefill_many`; off: each alone, bit-exact with a solo run). On CPU the
    prefill is compute-bound and the padding to the longest prompt is extra work, so one forward
    was slower there (benchmarks/batched_prefill.py); on a GPU it saves a launch-bound forward per
    newcomer. `pipeline` (default: on CUDA): a step's drawn ids are read on the host only after
    the next forward is launched (`_settle`), so the read overlaps the device's work. On CPU the
    launch *is* the work, so a deferred read would only hand every token to the vocoder one
    forward later.

    `speculative`: while at most `speculative.max_batch` sessions step together, each decodes by
    draft-and-verify rounds (`spec_decode`) instead, with its own adaptive k; above, plain batched
    steps. Tokens keep the plain sampler's distribution either way (greedy: the same tokens).
    Its rounds need the host's values of every draw so far: pending reads are settled first.
    """

    def __init__(self, t3: T3, s3gen: S3Gen, pool: KVPool, step: Callable | None = None, *,
                 probes: Probes = OFFICIAL.heads, max_queue: int | None = None, vocoder_batch: int | None = None,
                 batch_prefill: bool | None = None, pipeline: bool | None = None,
                 speculative: SpecConfig | None = None):
        max_queue = pool.slots if max_queue is None else max_queue
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.t3, self.s3gen, self.pool, self.probes, self.max_queue = t3, s3gen, pool, probes, max_queue
        if step is None:
            step = BatchedStep(t3, pool, probes)
            step.capture()  # a no-op without CUDA graphs
        self.step = step
        self.speculative = speculative
        self._device = t3.speech_head.weight.device
        self.batch_prefill = self._device.type == "cuda" if batch_prefill is None else batch_prefill
        self.pipeline = self._device.type == "cuda" if pipeline is None else pipeline
        self._pending: list[Draws] = []  # draws not read on the host yet (engine thread only)
        # every session's sampler and guard state: one sampling call per step for all of them
        self._rows = RowSampler(t3, pool.slots, max_text=pool.max_len - t3.cfg.len_cond)
        self._cv = threading.Condition()
        self._waiting: deque[Job] = deque()  # guarded by _cv
        self._active: list[Job] = []  # engine thread only
        self._closed = False
        # SchedulerStats' spec_* fields are SpecStats' counters, summed over every session's rounds
        self._counts = dict(steps=0, step_rows=0, tokens=0, admitted=0, rejected=0,
                            **{f"spec_{f.name}": 0 for f in fields(SpecStats)})
        self._wait_sum = self._wait_max = 0.0
        vocoder_device = s3gen.flow.encoder_proj.weight.device
        if vocoder_batch is None:
            vocoder_batch = 8 if vocoder_device.type == "cuda" else 1
        self._vocoder = VocoderWorker(vocoder_device, vocoder_batch)
        self._thread = threading.Thread(target=self._loop, name="nutq-scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public

    def run(self, session: Session, continuation: bool = False,
            out: ChunkQueue | LoopChunkQueue | None = None) -> "Chunks":
        """Queue `session` now (SchedulerBusy / SchedulerClosed / EngineError are raised here) and
        return an iterator over its chunks as they are ready (`out`: where the vocoder thread puts
        them; default a `ChunkQueue` read by the iterating thread). Its `close()` removes the
        session at the next step boundary and returns once the slot is free.

        `continuation`: the next phrase of a stream already playing. It waits ahead of new requests
        (behind earlier continuations) and is never refused for a full queue: its stream was
        admitted already, and refusing it would cut the audio mid-utterance."""
        if session.pool is not self.pool:
            raise EngineError("the session's KV slot must come from the scheduler's pool")
        if session.probes and session.probes != self.probes:
            raise EngineError(f"the session's guard reads heads {session.probes}, this scheduler's step "
                             f"computes {self.probes}")
        with self._cv:
            if self._closed:
                raise SchedulerClosed("the scheduler is closed")
            free = self.pool.slots - self.pool.in_use
            if not continuation and len(self._waiting) - free >= self.max_queue:
                self._counts["rejected"] += 1
                raise SchedulerBusy(f"all {self.pool.slots} sessions are busy and {len(self._waiting) - free} "
                                    f"wait already (limit {self.max_queue})")
            job = Job(session, time.perf_counter(), continuation, out)
            if continuation:
                at = next((i for i, j in enumerate(self._waiting) if not j.continuation), len(self._waiting))
                self._waiting.insert(at, job)
            else:
                self._waiting.append(job)
            self._cv.notify()
        return Chunks(job, self._cv)

    def stats(self) -> SchedulerStats:
        with self._cv:
            v = self._vocoder
            return SchedulerStats(queued=len(self._waiting), active=len(self._active),
                                  vocoder_backlog=v.backlog, queue_wait_s_sum=self._wait_sum,
                                  queue_wait_s_max=self._wait_max, vocoder_batches=v.batches,
                                  vocoder_rows=v.batch_rows, vocoder_retries=v.batch_retries, **self._counts)

    def close(self) -> None:
        """Stop both threads; sessions not finished yet fail with SchedulerClosed. Idempotent."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join()
        self._vocoder.close(SchedulerClosed("the scheduler was closed while this session was vocoded"))

    def __enter__(self) -> "Scheduler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ engine thread

    def _loop(self) -> None:
        if self._device.type == "cuda":  # a new thread's current device is cuda:0: pin it to T3's
            torch.cuda.set_device(self._device)
        error: BaseException = SchedulerClosed("the scheduler was closed before this session finished")
        try:
            while True:
                with self._cv:
                    while not (self._closed or self._waiting or self._active):
                        self._cv.wait()
                    if self._closed:
                        return
                self._drop_leaving()
                self._admit()
                self._step()
                if not self._active:
                    with self._cv:
                        if self._waiting and not self._closed:
                            # Slots are held outside this scheduler (solo sessions on the same
                            # pool), which tells nobody when it frees one: look again shortly.
                            self._cv.wait(0.005)
        except BaseException as e:  # a bug in the engine: fail every session rather than hang them
            error = e
            raise
        finally:
            with self._cv:
                self._closed = True
                jobs, self._waiting = list(self._waiting) + self._active, deque()
            self._active = []
            for job in jobs:
                self._fail(job, error)

    def _drop_leaving(self) -> None:
        with self._cv:
            gone = [j for j in self._waiting if j.leaving]
            for j in gone:
                self._waiting.remove(j)
        for j in gone:
            self._stop(j)
        for j in [j for j in self._active if j.leaving]:
            self._active.remove(j)
            self._stop(j)

    def _stop(self, job: Job) -> None:
        """Cancelled or abandoned: end quietly; failed: its error is already in its queue."""
        if job.vocoding is not None:
            job.vocoding.stopped = True
        job.session.end()
        if not (job.vocoding is not None and job.vocoding.failed):
            job.out.put(END)
        job.released.set()

    def _fail(self, job: Job, error: BaseException) -> None:
        if job.vocoding is not None:
            job.vocoding.stopped = True
        job.session.end()
        job.out.put(error)
        job.released.set()

    def _admit(self) -> None:
        """Newcomers: lease, prefill (together, `PREFILL_BATCH` at a time) and draw the first
        token, in arrival order, while slots last."""
        leased = []
        while True:
            with self._cv:
                if not self._waiting or self._closed:
                    break
                try:
                    slot = self.pool.lease()
                except PoolExhausted:
                    break
                job = self._waiting.popleft()
            now = time.perf_counter()
            job.session.timings.queue_s = wait = now - job.t_submit
            with self._cv:
                self._counts["admitted"] += 1
                self._wait_sum += wait
                self._wait_max = max(self._wait_max, wait)
            leased.append((job, slot))
        begun = []
        for i in range(0, len(leased), PREFILL_BATCH):
            begun += self._begin(leased[i:i + PREFILL_BATCH])
        if begun:
            jobs = [j for j, _ in begun]
            self._active.extend(jobs)
            self._sample(jobs, torch.stack([lg for _, lg in begun]), None, time.perf_counter())

    def _begin(self, leased: list) -> list:
        """Prefill the sessions of `leased` ((job, slot) pairs) in one forward and start them;
        returns (job, first logits) of those that began. A bad prompt or voice fails its own
        session before the forward; a failing shared forward is retried per session, so that its
        error lands on the session that caused it."""
        t0 = time.perf_counter()
        prompts = []
        for job, slot in leased:
            try:
                prompts.append((job, slot, job.session.prompt() if self.batch_prefill and len(leased) > 1 else None))
            except Exception as e:  # noqa: BLE001 - bad prompt etc.: this session only
                slot.release()  # not the session's yet: begin() takes it
                self._fail(job, e)
        outs = [None] * len(prompts)
        if len(prompts) > 1 and self.batch_prefill:
            probes = self.probes if any(j.session.probes for j, _, _ in prompts) else ()
            try:
                outs = prefill_many(self.t3, [e for _, _, e in prompts], [sl.cache for _, sl, _ in prompts], probes)
            except Exception:  # noqa: BLE001 - cannot be pinned on one session: each alone below
                outs = [None] * len(prompts)
        dt = time.perf_counter() - t0
        begun = []
        for (job, slot, _), out in zip(prompts, outs):
            s = job.session
            try:
                if out is not None:
                    logits, attn, L = out
                    out = (logits, attn if s.probes else None, L, dt)
                logits = s.begin(slot, self._rows, out)
                ready = None
                if self._device.type == "cuda":  # the vocoder's stream waits for its noise, drawn here
                    ready = torch.cuda.Event()
                    ready.record()
                job.vocoding = VocoderTask(s, job.out, ready)
            except Exception as e:  # noqa: BLE001 - bad prompt etc.: this session only
                self._fail(job, e)
                continue
            begun.append((job, logits))
        return begun

    def _step(self) -> None:
        # A session whose consumer has not taken its last chunks sits this step out: its stream's
        # client is slow (or has stopped reading), so it waits with its slot instead of decoding
        # ahead into memory and taking steps from the others. A session at its limit has a draw
        # still unread (pipelined): it leaves when that is read.
        batch = [j for j in self._active
                 if j.out.qsize() < MAX_UNREAD_CHUNKS and j.session.next_position is not None]
        if not batch:
            self._settle()
            if self._active:
                with self._cv:  # every session waits for its consumer, which tells nobody: look again soon
                    self._cv.wait(0.005)
            return
        if self.speculative is not None and len(batch) <= self.speculative.max_batch:
            self._settle()  # draft-and-verify reads host values: every earlier draw applied first
            live = set(self._active)
            self._spec_step([j for j in batch if j in live])
            return
        t0 = time.perf_counter()
        sessions = [j.session for j in batch]
        at = [s.next_position for s in sessions]
        try:
            tokens = torch.cat([s.fed for s in sessions])
            logits, attn = self.step([s.slot.index for s in sessions], tokens, [a[0] for a in at],
                                     [a[1] for a in at])
        except Exception as e:  # noqa: BLE001 - the forward is shared: every session in it fails
            for job in batch:
                self._active.remove(job)
                self._fail(job, e)
            self._settle()
            return
        with self._cv:
            self._counts["steps"] += 1
            self._counts["step_rows"] += len(batch)
        # Pipelined: the previous draws are read while this forward runs on the device. A session
        # they end (EOS, limit) has had one forward too many: its outputs are dropped here, and
        # nothing was drawn for it (its sampler and guard state stay as they were).
        self._settle()
        live = set(self._active)
        keep = [k for k, j in enumerate(batch) if j in live]
        if len(keep) < len(batch):
            if not keep:
                return
            index = to_device(torch.tensor(keep), self._device)
            batch = [batch[k] for k in keep]
            logits, attn = logits.index_select(0, index), None if attn is None else attn.index_select(0, index)
        self._sample(batch, logits, attn, t0)

    def _spec_step(self, batch: list[Job]) -> None:
        """One speculative round per session of a small batch, in turn (each its own forward, so a
        failure is that session's alone)."""
        for job in batch:
            t0 = time.perf_counter()
            try:
                if job.spec is None:
                    job.spec = SpecSession(self.speculative, job.session, self._rows)
                drawn = job.spec.round()
            except Exception as e:  # noqa: BLE001 - its own draft and forward: this session only
                self._active.remove(job)
                self._fail(job, e)
                continue
            with self._cv:
                for f in fields(SpecStats):
                    self._counts[f"spec_{f.name}"] += getattr(job.spec.last, f.name)
            self._accept_round(job, drawn, t0)

    def _accept_round(self, job: Job, drawn: list, t0: float) -> None:
        """A round's tokens for one session, in order, each as `_settle` applies a step's."""
        s = job.session
        values = torch.cat([tok for tok, _ in drawn]).tolist()
        dt = time.perf_counter() - t0
        with self._cv:
            self._counts["tokens"] += len(values)
        s.timings.decode_s += dt
        for (tok, position), value in zip(drawn, values):
            s.took(tok, position)
            if not self._emit(job, value, s.guard_position):
                return

    def _emit(self, job: Job, value: int, position: torch.Tensor | None) -> bool:
        """One token read on the host for `job`: to its vocoder (with the guard's `position` after
        it), or, when it ends the session (EOS, limit), the session retired and its audio flushed.
        False once retired."""
        s = job.session
        more = s.accept(value)
        if more:
            self._vocoder.push(job.vocoding, value, position)
            if s.next_position is not None:
                return True
        self._active.remove(job)
        s.end()
        job.released.set()
        self._vocoder.flush(job.vocoding)
        return False

    def _sample(self, batch: list[Job], logits: torch.Tensor, attn: torch.Tensor | None, t0: float) -> None:
        """One sampling call (guards included) for every session of `batch`; a failure cannot be
        pinned on one session, so it fails them all. The ids stay on the device until `_settle`
        (at once unless pipelined)."""
        sessions = [j.session for j in batch]
        try:
            tokens, positions = self._rows.sample([s.slot.index for s in sessions], logits, attn)
        except Exception as e:  # noqa: BLE001
            for job in batch:
                self._active.remove(job)
                self._fail(job, e)
            return
        for k, s in enumerate(sessions):
            s.took(tokens[k:k + 1], positions[k:k + 1])
        self._pending.append(Draws(batch, tokens, positions, t0))
        if not self.pipeline:
            self._settle()

    def _settle(self) -> None:
        """Read every pending draw on the host (one read per sampling call) and apply it: tokens to
        the vocoder, finished sessions retired. Afterwards the host knows every session's state:
        call it before anything that needs host values of the draws so far. Draws of sessions that
        left meanwhile (cancelled, failed) are dropped. Each session is charged the wall time
        since its step began: what the shared step cost it."""
        pending, self._pending = self._pending, []
        for draws in pending:
            values = draws.values()
            dt = time.perf_counter() - draws.t0
            live = set(self._active)
            with self._cv:
                self._counts["tokens"] += len(values)
            for k, (job, tok) in enumerate(zip(draws.jobs, values)):
                if job not in live:
                    continue
                job.session.timings.decode_s += dt
                self._emit(job, tok, draws.positions[k:k + 1] if job.session.guard is not None else None)
