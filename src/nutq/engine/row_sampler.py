"""Sampling and alignment-guard state for many sessions, one call per decode step for all of them.

Each session owns a row (its KV slot's index when a scheduler runs it, 0 when it runs alone):
its sampling parameters, generator, the ids it has emitted (repetition penalty), the token its
next forward consumes and its guard state. A step samples any subset of rows with a constant
number of tensor ops: one CFG mix, one guard update per guard profile in use (not per session),
one pass of the sampling chain with per-row parameters (`sampling.processed_logits`) and one
argmax, plus one noise fill per sampled row, drawn from that row's own generator. A row's draws
are therefore exactly those it makes alone (`sampling.draw`), and its guard decisions those of
its own guard (`DeviceGuard` steps only the rows it is given).

Nothing here reads the device: decisions stay tensors, per-row values come from tables on the
device, and host-to-device copies go through pinned memory. `counts(row)` reads a row's guard
counters once, when its session ends.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..models.t3 import T3
from .alignment import GuardConfig
from .alignment_device import DeviceGuard, text_span_rows
from .sampling import RowParams, SamplingParams, cfg_mix, processed_logits, sample_rows, to_device

__all__ = ["RowSampler"]


class RowSampler:
    """`rows` session rows with texts of up to `max_text` tokens, on T3's device."""

    def __init__(self, t3: T3, rows: int, *, max_text: int):
        if rows < 1 or max_text < 1:
            raise ValueError(f"a row sampler needs rows >= 1 and max_text >= 1, got {rows}, {max_text}")
        cfg = t3.cfg
        self.device = dev = t3.speech_head.weight.device
        self.rows, self.max_text, self.vocab = rows, max_text, cfg.speech_vocab
        self._bos, self._eos = cfg.start_speech, cfg.stop_speech
        self._seen = torch.zeros(rows, self.vocab, dtype=torch.bool, device=dev)
        self._table = torch.zeros(rows, RowParams.table_of([SamplingParams()], self.vocab).shape[1], device=dev)
        self._fed = torch.zeros(rows, dtype=torch.long, device=dev)
        self._spans = torch.zeros(rows, 2, dtype=torch.long, device=dev)  # text span in the prefill
        self._suppress = torch.zeros(rows, dtype=torch.bool, device=dev)  # the guard's latest decisions
        self._force = torch.zeros(rows, dtype=torch.bool, device=dev)
        self._position = torch.zeros(rows, dtype=torch.long, device=dev)  # the guard's text position
        self._params: list[SamplingParams | None] = [None] * rows
        self._generators: list[torch.Generator | None] = [None] * rows
        self._row_guard: list[DeviceGuard | None] = [None] * rows
        self._guards: dict[GuardConfig, DeviceGuard] = {}  # one per profile in use, over all rows
        self._is_eos = torch.arange(self.vocab, device=dev) == self._eos
        self._true = torch.ones((), dtype=torch.bool, device=dev)

    def start(self, row: int, params: SamplingParams, generator: torch.Generator | None,
              guard: GuardConfig | None = None, span: tuple[int, int] | None = None,
              prefill_attn: torch.Tensor | None = None) -> None:
        """Reset `row` for a new session. With a guard: its text `span` in the prefill and the
        prefill's probe attention `prefill_attn` (n_heads, L, L) (frame 0: the two BOS queries)."""
        if not 0 <= row < self.rows:
            raise ValueError(f"row must be in [0, {self.rows}), got {row}")
        dev = self.device
        self._params[row], self._generators[row], self._row_guard[row] = params, generator, None
        host = RowParams.table_of([params], self.vocab)
        with torch.inference_mode():
            self._table[row] = to_device(host[0], dev)
            self._seen[row] = False
            self._seen[row, self._bos] = True  # the official penalty counts the BOS as emitted
            self._fed[row] = self._bos
            self._suppress[row] = False
            self._force[row] = False
            self._position[row] = 0
            if guard is None:
                return
            i, j = span
            if not 1 <= j - i <= self.max_text:
                raise ValueError(f"a text of {j - i} tokens does not fit this sampler's {self.max_text}")
            self._spans[row] = to_device(torch.tensor([i, j]), dev)
            g = self._row_guard[row] = self._guard(guard)
            pos, sup, force = g.start([prefill_attn[:, -2:, i:j]], bos=self._bos, slots=[row])
            self._position[row], self._suppress[row], self._force[row] = pos[0], sup[0], force[0]

    def _guard(self, cfg: GuardConfig) -> DeviceGuard:
        g = self._guards.get(cfg)
        if g is None:
            g = self._guards[cfg] = DeviceGuard(self.rows, self.max_text, cfg, device=self.device)
        return g

    @torch.inference_mode()
    def sample(self, rows: Sequence[int], logits: torch.Tensor,
               attn: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token for each of `rows` (distinct, started) from their logits (n, 2, V) (cond,
        uncond): the prefill's, or those of the decode step that consumed each row's last token,
        whose probe attention `attn` (n, n_heads, 1, >= text end) the guards observe first.

        Returns (tokens (n,) long, guard text positions (n,) long, 0 for rows without a guard),
        both fresh device tensors (snapshots)."""
        index = self._index(rows)
        proc, rp = self._processed(rows, index, logits, attn)
        tok = sample_rows(proc, rp, [self._generators[r] for r in rows])
        self._commit(index, tok)
        return tok, self._position.index_select(0, index)

    # The same step in three parts, for a caller that decides a row's token itself (speculative
    # verification: the target's distribution at each drafted position, in order).

    @torch.inference_mode()
    def process(self, row: int, logits: torch.Tensor, attn: torch.Tensor | None = None) -> torch.Tensor:
        """`sample`'s chain for one row without the draw: the guard observes `attn` (n_heads, 1, S)
        (the forward that consumed the row's last committed token), then (1, V) processed logits
        (softmax: the distribution `sample` would draw from). Call `commit` with the chosen token
        before processing the row's next position."""
        return self._processed([row], self._index([row]), logits[None], None if attn is None else attn[None])[0]

    @torch.inference_mode()
    def draw(self, row: int, proc: torch.Tensor) -> torch.Tensor:
        """The draw `sample` makes from `process`'s logits (1, V): (1,) long, the row's generator."""
        p = self._params[row]
        return sample_rows(proc, RowParams.select(self._table[row:row + 1], [p], self.vocab), [self._generators[row]])

    @torch.inference_mode()
    def commit(self, row: int, tok: torch.Tensor) -> torch.Tensor:
        """Record `tok` (1,) as the row's next token (repetition penalty, the token its next
        position consumes); returns the guard's text position (1,) as of the last `process`."""
        index = self._index([row])
        self._commit(index, tok)
        return self._position.index_select(0, index)

    def seen(self, row: int) -> torch.Tensor:
        """(1, V) bool: the ids the row's repetition penalty counts (a snapshot)."""
        return self._seen[row:row + 1].clone()

    def generator(self, row: int) -> torch.Generator | None:
        return self._generators[row]

    def params(self, row: int) -> SamplingParams:
        return self._params[row]

    def _processed(self, rows: Sequence[int], index: torch.Tensor, logits: torch.Tensor,
                   attn: torch.Tensor | None) -> tuple[torch.Tensor, RowParams]:
        n = len(rows)
        if logits.shape[:2] != (n, 2) or (attn is not None and attn.shape[0] != n):
            raise ValueError(f"{n} rows need logits (n, 2, V) and attention (n, ...), got {tuple(logits.shape)}"
                             f" and {None if attn is None else tuple(attn.shape)}")
        params = [self._params[r] for r in rows]
        rp = RowParams.select(self._table.index_select(0, index), params, self.vocab)
        mixed = cfg_mix(logits[:, 0], logits[:, 1], rp.column(0))
        if attn is not None:
            self._observe(rows, index, attn)
        if any(self._row_guard[r] is not None for r in rows):
            mixed = DeviceGuard.apply(mixed, self._suppress.index_select(0, index),
                                      self._force.index_select(0, index), self._eos)
        if any(p.ignore_eos for p in params):
            ignore = torch.tensor([p.ignore_eos for p in params])
            mixed = mixed.masked_fill(to_device(ignore, self.device)[:, None] & self._is_eos, float("-inf"))
        return processed_logits(mixed, self._seen.index_select(0, index), rp), rp

    def _commit(self, index: torch.Tensor, tok: torch.Tensor) -> None:
        self._seen.index_put_((index, tok), self._true)
        self._fed.index_copy_(0, index, tok)

    def _observe(self, rows: Sequence[int], index: torch.Tensor, attn: torch.Tensor) -> None:
        """Step the guard of every guarded row in `rows` on its probe attention: one update per
        profile. The others' guard state (and rows not stepped) stays as it is."""
        for guard in self._guards.values():
            members = [k for k, r in enumerate(rows) if self._row_guard[r] is guard]
            if not members:
                continue
            if len(members) == len(rows):  # the usual case: every row uses this profile
                sub, slots = attn, index
            else:
                sub_index = self._index(members)
                sub, slots = attn.index_select(0, sub_index), index.index_select(0, sub_index)
            text = text_span_rows(sub, self._spans.index_select(0, slots), self.max_text)[:, :, 0]
            pos, sup, force = guard.observe(text, self._fed.index_select(0, slots), slots=slots)
            self._position.index_copy_(0, slots, pos)
            self._suppress.index_copy_(0, slots, sup)
            self._force.index_copy_(0, slots, force)

    def counts(self, row: int) -> dict[str, int]:
        """The guard's decision counts of `row` (one device read); {} without a guard."""
        guard = self._row_guard[row]
        return guard.counts_of(row) if guard is not None else {}

    def _index(self, rows: Sequence[int]) -> torch.Tensor:
        return to_device(torch.tensor(rows, dtype=torch.long), self.device)
