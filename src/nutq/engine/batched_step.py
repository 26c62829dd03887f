"""One T3 decode step for many sessions at once, over the rows of the shared KV pool.

Each session owns a pool slot (its two CFG rows, `ROWS_PER_SESSION`) and sits at its own position,
so the step runs with per-row positions: RoPE, the K/V write and the causal mask all follow each
row's own position. The batch is always a *prefix* of pool rows, `ROWS_PER_SESSION * bucket`,
where `bucket` is the smallest ladder size holding the highest slot in the step. A fixed set of
shapes is what lets a CUDA graph be captured once per ladder size and replayed for any sessions.

Rows of the prefix whose slot is not in the step ("dummy rows") still run. They must not disturb
a session that is between steps (waiting, or being prefilled by another thread), so they write at
`pool.max_len - 1` and nowhere else. That position is safe because a session only ever reads a
position it has written itself, and the write of the step at a position comes before its read
in the same forward (per layer: write K/V, then attend). A stale dummy key there is therefore
overwritten before any session attends to it. Prefill never reaches it (a prompt must be shorter
than the cache), and slot contents are never cleared between tenants for the same reason.

The step is not thread-safe: one scheduler thread owns it (and the GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..models.t3 import T3
from .kv_pool import ROWS_PER_SESSION, KVPool

__all__ = ["BatchedStep", "DEFAULT_LADDER", "DEFAULT_SPANS", "batch_ladder", "span_ladder"]

Probes = tuple[tuple[int, int], ...]

DEFAULT_LADDER = (1, 2, 4, 8, 16, 32, 64)
# Attention spans (cache positions read per step) of the static path: a step reads the smallest
# that covers its furthest session, so short sessions do not read the whole cache (at 64
# sessions of a 1500-position full-size cache that is ~24 GB of K/V per step).
DEFAULT_SPANS = (256, 512, 1024)


def span_ladder(max_len: int, spans: Sequence[int] | None = None) -> tuple[int, ...]:
    """Sorted attention spans for a cache of `max_len`, always ending at `max_len`."""
    spans = DEFAULT_SPANS if spans is None else spans
    bad = [n for n in spans if not isinstance(n, int) or n < 1]
    if bad:
        raise ValueError(f"attention spans must be positive ints, got {bad}")
    return tuple(sorted({n for n in spans if n < max_len} | {max_len}))


def batch_ladder(slots: int, ladder: Sequence[int] | None = None) -> tuple[int, ...]:
    """Sorted bucket sizes (in sessions) for a pool of `slots`, always ending at `slots` so that
    every slot can take part. `None` caps `DEFAULT_LADDER` at the pool size."""
    if ladder is None:
        ladder = [b for b in DEFAULT_LADDER if b < slots]
    else:
        ladder = list(ladder)
        bad = [b for b in ladder if not isinstance(b, int) or not 1 <= b <= slots]
        if bad:
            raise ValueError(f"ladder sizes must be ints in [1, {slots}] (the pool's slots), got {bad}")
    return tuple(sorted(set(ladder) | {slots}))


@dataclass
class _Bucket:
    """Static input buffers of one ladder size (and on CUDA its captured graph per attention span,
    with the graph's outputs, read right after each replay)."""

    size: int
    tokens: torch.Tensor  # (size,) long: the fed-back token of each slot in the prefix
    ints: torch.Tensor  # (2, size) long: row 0 absolute position, row 1 speech position
    graphs: dict = field(default_factory=dict)  # span -> (CUDAGraph, logits, attn)


class BatchedStep:
    """`step(slots, tokens, speech_pos, pos) -> (logits (n, 2, V) fp32, attention or None)`.

    Equal (up to float rounding from different matmul shapes) to `decode.decode_step` run for each
    session alone on its slot. Three ways to run the same code:

    - eager (`static=False`, the CPU default): attention spans `max(pos) + 1` cache positions;
    - static (`static=True`): attention spans the smallest of `spans` (`span_ladder`, ending at
      `pool.max_len`) covering max(pos) + 1, so every shape is fixed per (bucket, span); on CPU
      this runs the graph's code eagerly (what CPU tests check);
    - CUDA graphs (`cuda_graphs=True`, the CUDA default, implies static): `capture()` records one
      graph per ladder size and span at warm-up, and a step replays the smallest that fits.

    Host work per step: Python ints into one (pinned) tensor, one host-to-device copy, a token
    scatter, the forward (or a replay) and two gathers. Nothing reads the device back.
    """

    def __init__(self, t3: T3, pool: KVPool, probes: Probes = (), *, ladder: Sequence[int] | None = None,
                 cuda_graphs: bool | None = None, static: bool | None = None, spans: Sequence[int] | None = None):
        self.device = t3.speech_head.weight.device
        if pool.cache.k.device != self.device:
            raise ValueError(f"the KV pool is on {pool.cache.k.device} but T3 is on {self.device}")
        on_cuda = self.device.type == "cuda"
        self.cuda_graphs = on_cuda if cuda_graphs is None else cuda_graphs
        if self.cuda_graphs and not on_cuda:
            raise ValueError(f"CUDA graphs need T3 on a CUDA device, not {self.device}")
        self.static = self.cuda_graphs if static is None else static
        if self.cuda_graphs and not self.static:
            raise ValueError("CUDA graphs need static shapes (static=True)")
        self.t3, self.pool, self.probes = t3, pool, tuple(probes)
        self.ladder = batch_ladder(pool.slots, ladder)
        self.spans = span_ladder(pool.max_len, spans)
        self._pin = on_cuda  # pinned host memory makes the host-to-device copy asynchronous
        self._dummy_pos = pool.max_len - 1  # see the module docstring
        self._n_speech_pos = t3.speech_pos_emb.emb.num_embeddings
        self._key_pos = torch.arange(pool.max_len, device=self.device)
        self._buckets = {b: self._new_bucket(b) for b in self.ladder}
        self._captured = False

    def _new_bucket(self, size: int) -> _Bucket:
        ints = torch.zeros(2, size, dtype=torch.long, device=self.device)
        ints[0] = self._dummy_pos
        return _Bucket(size, torch.zeros(size, dtype=torch.long, device=self.device), ints)

    def span_for(self, pos: Sequence[int]) -> int:
        """The smallest attention span covering positions [0, max(pos)] (static path)."""
        top = max(pos) + 1
        return next(n for n in self.spans if n >= top)

    def bucket_for(self, slots: Sequence[int]) -> int:
        """The smallest ladder size covering slots [0, max(slots)]."""
        top = max(slots) + 1
        return next(b for b in self.ladder if b >= top)

    # ---- the step ---------------------------------------------------------------------------
    @torch.inference_mode()
    def __call__(self, slots: Sequence[int], tokens: torch.Tensor, speech_pos: Sequence[int],
                 pos: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """slots: pool slot of each session (n distinct); tokens (n,) long on the model's device
        (the fed-back ids); speech_pos / pos: per session, as `decode_step` takes them.

        Returns logits (n, 2, V) fp32 (each session's cond and uncond rows) and, with probes, the
        attention (n, len(probes), 1, S) of each session's cond row over cache positions [0, S),
        S > max(pos) (S = the step's span on the static path, `span_for`); positions beyond a session's own
        `pos` are 0. Writes each session's K/V at its own `pos` in its own slot rows.
        """
        self._check(slots, tokens, speech_pos, pos)
        bucket = self._buckets[self.bucket_for(slots)]
        size = bucket.size
        if self.cuda_graphs and not self._captured:
            raise RuntimeError("CUDA graphs are not captured yet: call capture() at warm-up, before serving")
        positions, speech = [self._dummy_pos] * size, [0] * size
        for s, sp, p in zip(slots, speech_pos, pos):
            positions[s], speech[s] = p, sp
        host = torch.tensor(positions + speech + list(slots), dtype=torch.long, pin_memory=self._pin)
        dev = host.to(self.device, non_blocking=True)
        bucket.ints.copy_(dev[: 2 * size].view(2, size))
        index = dev[2 * size:]  # (n,) the slot of each session, to scatter inputs and gather outputs
        # Dummy rows keep whatever token they had: any valid id will do, their outputs are dropped.
        bucket.tokens.index_copy_(0, index, tokens)
        span = self.span_for(pos) if self.static else max(pos) + 1
        if bucket.graphs:
            # Graphs share one memory pool, so outputs are gathered before any other replay.
            graph, logits, attn = bucket.graphs[span]
            graph.replay()
        else:
            logits, attn = self._forward(bucket, span)
        return logits.index_select(0, index), (attn.index_select(0, index) if self.probes else None)

    def _forward(self, bucket: _Bucket, span: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The pure step over the prefix rows of `bucket`: it reads only the bucket's buffers and
        the cache, so it can be captured. Returns logits (size, 2, V) fp32 and probes of the cond
        rows (size, len(probes), 1, span) or None."""
        t3, rows = self.t3, ROWS_PER_SESSION * bucket.size
        pos, speech_pos = bucket.ints[0], bucket.ints[1]
        x = t3.speech_emb(bucket.tokens) + t3.speech_pos_emb.emb(speech_pos)  # (size, C)
        # Each slot's cond and uncond rows get the same input and position (expand + reshape: unlike
        # some repeat_interleave paths, it never asks the device for an output size).
        x = x[:, None].expand(-1, ROWS_PER_SESSION, -1).reshape(rows, 1, -1)  # (rows, 1, C)
        row_pos = pos[:, None].expand(-1, ROWS_PER_SESSION).reshape(rows, 1)  # (rows, 1)
        mask = (self._key_pos[:span] <= row_pos[..., None])[:, None]  # (rows, 1, 1, span)
        out = t3.tfmr(x, row_pos, self.pool.cache.rows(0, rows), kv_len=span, mask=mask, probes=self.probes,
                      probe_rows=slice(0, rows, ROWS_PER_SESSION))
        h, attn = out if self.probes else (out, None)
        logits = t3.speech_logits(h[:, 0]).float().view(bucket.size, ROWS_PER_SESSION, -1)
        return logits, attn

    def _check(self, slots, tokens, speech_pos, pos) -> None:
        """Host-side checks on Python ints and tensor metadata only: no device read."""
        n = len(slots)
        if n == 0:
            raise ValueError("a batched step needs at least one session")
        if not (len(speech_pos) == len(pos) == n and tokens.shape == (n,)):
            raise ValueError(f"{n} slots need tokens of shape ({n},) and {n} speech_pos and pos, got tokens "
                             f"{tuple(tokens.shape)}, {len(speech_pos)} speech_pos, {len(pos)} pos")
        if tokens.dtype != torch.long or tokens.device != self.device:
            raise ValueError(f"tokens must be int64 on {self.device}, got {tokens.dtype} on {tokens.device}")
        if len(set(slots)) != n:
            raise ValueError(f"slots must be distinct, got {list(slots)}")
        if not all(0 <= s < self.pool.slots for s in slots):
            raise ValueError(f"slots must be in [0, {self.pool.slots}), got {list(slots)}")
        if not all(0 <= p < self.pool.max_len for p in pos):
            raise ValueError(f"positions must be in [0, {self.pool.max_len}) (the KV cache length), got {list(pos)}")
        if not all(0 <= sp < self._n_speech_pos for sp in speech_pos):
            raise ValueError(f"speech positions must be in [0, {self._n_speech_pos}), got {list(speech_pos)}")

    # ---- CUDA graphs ------------------------------------------------------------------------
    @torch.inference_mode()
    def capture(self) -> None:
        """Record one CUDA graph per ladder size (at warm-up, so no request pays for it); a no-op
        when this step does not use graphs. Warm-up runs write only the dummy position of each
        slot, so capturing is harmless even with sessions in the pool."""
        if not self.cuda_graphs or self._captured:
            return
        # Everything under T3's device: `torch.cuda.graph` captures on the *current* device's
        # stream, so T3 on cuda:1 with cuda:0 current would record empty graphs that replay
        # stale outputs. "thread_local" lets other threads (a vocoder rendering) run meanwhile.
        with torch.cuda.device(self.device):
            shared_pool = None
            side = torch.cuda.Stream(self.device)
            # Largest first: the smaller graphs fit in the memory the largest one reserved.
            for size in reversed(self.ladder):
                bucket = self._buckets[size]
                bucket.ints[0].fill_(self._dummy_pos)
                bucket.ints[1].zero_()
                for span in reversed(self.spans):
                    side.wait_stream(torch.cuda.current_stream(self.device))
                    with torch.cuda.stream(side):  # lazy initialisation (cuBLAS handles, workspaces) off the graph
                        for _ in range(2):
                            self._forward(bucket, span)
                    torch.cuda.current_stream(self.device).wait_stream(side)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, pool=shared_pool, stream=side, capture_error_mode="thread_local"):
                        logits, attn = self._forward(bucket, span)
                    torch.cuda.current_stream(self.device).wait_stream(side)
                    shared_pool = graph.pool() if shared_pool is None else shared_pool
                    bucket.graphs[span] = (graph, logits, attn)
            torch.cuda.synchronize(self.device)
        self._captured = True
