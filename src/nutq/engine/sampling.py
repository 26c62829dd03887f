"""Speech-token sampling as the official multilingual `generate()` does it, on device.

Order per step (the official one, see docs/model.md "Sampling"): CFG mix -> alignment guard (EOS suppress/force) ->
repetition penalty over every id emitted so far, BOS included -> temperature -> min_p -> top_p
(-> top_k, ours, off by default) -> softmax -> multinomial. The processors are pure tensor
functions over (B, V) logits.

Two forms of the same chain:

- scalar (`sampling_logits`, `sample`): one `SamplingParams` for every row; the plain reference
  loop (`generate.py`) uses it, as the oracle the fast paths are tested against;
- per row (`RowParams`, `processed_logits`, `row_probs`, `draw`, `sample_rows`): each row its own
  parameters and its own generator, in a constant number of tensor ops per step whatever the
  number of rows (plus one noise fill per sampled row: a generator draws its own numbers). The
  engine samples every session of a step in one call of it, a solo session as a batch of one.

Per-row draws are exactly `torch.multinomial(probs[i:i+1], 1, generator=g_i)`: for one sample
torch draws q ~ Exp(1) per vocabulary entry with the generator and takes argmax(p / q) (the
Gumbel-max trick in exponential form), which `draw` does with the noise of row i drawn from
generator i alone. A session's seeded tokens therefore do not depend on who else is sampled in the
same call, nor on whether it runs alone. A disabled filter (min_p 0, top_p 1, top_k 0) leaves its
row bit for bit unchanged, so rows with different settings share a call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["SamplingParams", "cfg_mix", "repetition_penalty", "min_p_filter", "top_p_filter", "top_k_filter",
           "sampling_logits", "sample", "RowParams", "processed_logits", "row_probs", "draw", "sample_rows", "to_device"]


@dataclass(frozen=True)
class SamplingParams:
    """Official defaults; `greedy=True` takes the argmax (deterministic tests, debugging)."""

    cfg_weight: float = 0.5
    temperature: float = 0.8
    repetition_penalty: float = 2.0
    min_p: float = 0.05
    top_p: float = 1.0
    top_k: int = 0  # 0 = off (the official loop has no top_k)
    max_new_tokens: int = 1000
    greedy: bool = False
    # Never stop on EOS, so exactly max_new_tokens are generated (benchmarks with a fixed length;
    # like vLLM's ignore_eos). The plain reference loop does not support it.
    ignore_eos: bool = False

    def __post_init__(self):
        if self.temperature <= 0 and not self.greedy:
            raise ValueError("temperature must be > 0 (use greedy=True for argmax decoding)")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if not 0.0 <= self.min_p <= 1.0 or not 0.0 < self.top_p <= 1.0:
            raise ValueError("min_p must be in [0, 1] and top_p in (0, 1]")
        if self.top_k < 0 or self.max_new_tokens < 1:
            raise ValueError("top_k must be >= 0 and max_new_tokens >= 1")


def cfg_mix(cond: torch.Tensor, uncond: torch.Tensor, weight: float) -> torch.Tensor:
    return cond + weight * (cond - uncond)


def repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """`seen` (B, V) bool: ids emitted so far. Negative logits x penalty, positive / penalty."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Drop tokens whose probability is below min_p x the top probability (the top one stays)."""
    if min_p <= 0.0:
        return logits
    probs = logits.softmax(dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < threshold, float("-inf"))


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set whose probability reaches top_p (at least one)."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cum <= (1.0 - top_p)
    remove_sorted[..., -1] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    if top_k <= 0 or top_k >= logits.shape[-1]:
        return logits
    kth = logits.topk(top_k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def sampling_logits(logits: torch.Tensor, seen: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Guarded CFG-mixed logits (B, V) -> the logits whose softmax is sampled."""
    x = repetition_penalty(logits, seen, p.repetition_penalty)
    if p.temperature != 1.0 and not p.greedy:
        x = x / p.temperature
    x = min_p_filter(x, p.min_p)
    x = top_p_filter(x, p.top_p)
    return top_k_filter(x, p.top_k)


def sample(logits: torch.Tensor, p: SamplingParams, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, V) processed logits -> (B,) ids, without a host sync."""
    if p.greedy:
        return logits.argmax(dim=-1)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------- per row

# RowParams.table columns: cfg weight, temperature (1 when greedy), repetition penalty, min_p,
# 1 - top_p (-1: off), top_k (V: off), greedy (1.0 / 0.0)
_COLUMNS = 7


@dataclass(frozen=True)
class RowParams:
    """The sampling parameters of B rows: a (B, 7) float32 table on the device plus what the host
    knows without reading it (which filters any row uses, which rows are greedy).

    Build one per step from the rows' `SamplingParams` (`of`), or keep a table per KV slot and
    `select` the step's rows from it (one gather, no host-to-device copy)."""

    table: torch.Tensor  # (B, _COLUMNS) float32
    greedy: tuple[bool, ...]
    min_p: bool = True  # some row filters: apply the filter (the others pass through unchanged)
    top_p: bool = True
    top_k: bool = True
    temperature: bool = True

    @staticmethod
    def row(p: SamplingParams, vocab: int) -> list[float]:
        """One row of `table`. 1 - top_p is taken in double precision on the host, as the scalar
        filter's Python float comparison does, so both cut at the same float32 threshold."""
        temperature = 1.0 if p.greedy else p.temperature
        top_p = 1.0 - p.top_p if p.top_p < 1.0 else -1.0
        top_k = p.top_k if 0 < p.top_k < vocab else vocab
        return [p.cfg_weight, temperature, p.repetition_penalty, p.min_p, top_p, float(top_k), float(p.greedy)]

    @classmethod
    def of(cls, params: Sequence[SamplingParams], vocab: int, device=None) -> "RowParams":
        return cls.select(to_device(cls.table_of(params, vocab), device), params, vocab)

    @classmethod
    def table_of(cls, params: Sequence[SamplingParams], vocab: int) -> torch.Tensor:
        """(len(params), 7) float32 on the host."""
        return torch.tensor([cls.row(p, vocab) for p in params], dtype=torch.float32)

    @classmethod
    def select(cls, table: torch.Tensor, params: Sequence[SamplingParams], vocab: int) -> "RowParams":
        """`table` holds the rows of `params`, in order (e.g. gathered from a per-slot table)."""
        return cls(table, tuple(p.greedy for p in params),
                   min_p=any(p.min_p > 0.0 for p in params), top_p=any(p.top_p < 1.0 for p in params),
                   top_k=any(0 < p.top_k < vocab for p in params),
                   temperature=any(not p.greedy and p.temperature != 1.0 for p in params))

    def column(self, k: int) -> torch.Tensor:
        return self.table[:, k:k + 1]  # (B, 1)


def processed_logits(mixed: torch.Tensor, seen: torch.Tensor, rp: RowParams) -> torch.Tensor:
    """Guarded CFG-mixed logits (B, V) -> the logits whose softmax is sampled, per row as
    `sampling_logits` with that row's parameters (`seen` (B, V) bool: ids emitted so far)."""
    pen = rp.column(2)
    x = torch.where(seen, torch.where(mixed < 0, mixed * pen, mixed / pen), mixed)
    if rp.temperature:
        x = x / rp.column(1)
    if rp.min_p:
        probs = x.softmax(dim=-1)
        x = x.masked_fill(probs < rp.column(3) * probs.amax(dim=-1, keepdim=True), float("-inf"))
    if rp.top_p:
        sorted_logits, order = x.sort(dim=-1, descending=False)
        remove_sorted = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= rp.column(4)
        remove_sorted[..., -1] = False
        x = x.masked_fill(remove_sorted.scatter(-1, order, remove_sorted), float("-inf"))
    if rp.top_k:
        k = rp.column(5).long()  # (B, 1) in [1, V]
        kth = x.sort(dim=-1, descending=True).values.gather(-1, k - 1)
        x = x.masked_fill(x < kth, float("-inf"))
    return x


def row_probs(mixed: torch.Tensor, seen: torch.Tensor, rp: RowParams) -> torch.Tensor:
    """(B, V) probabilities each row samples from (what a speculative verifier compares against)."""
    return processed_logits(mixed, seen, rp).softmax(dim=-1)


def draw(probs: torch.Tensor, generators: Sequence[torch.Generator | None],
         rows: Sequence[int] | None = None) -> torch.Tensor:
    """One id per row from probabilities (B, V) (any non-negative weights), row i with generator i
    (None: the default one): exactly `torch.multinomial(probs[i:i+1], 1, generator=generators[i])`.
    `rows`: only these rows consume noise (the others get argmax(probs)). No host sync."""
    q = torch.ones_like(probs)
    for i in range(probs.shape[0]) if rows is None else rows:
        q[i].exponential_(generator=generators[i])
    return (probs / q).argmax(dim=-1)


def sample_rows(logits: torch.Tensor, rp: RowParams, generators: Sequence[torch.Generator | None]) -> torch.Tensor:
    """(B, V) processed logits -> (B,) ids: argmax for greedy rows, a draw for the others."""
    if all(rp.greedy):
        return logits.argmax(dim=-1)
    drawn = draw(logits.softmax(dim=-1), generators, [i for i, g in enumerate(rp.greedy) if not g])
    if not any(rp.greedy):
        return drawn
    return torch.where(rp.table[:, 6] > 0, logits.argmax(dim=-1), drawn)


def to_device(host: torch.Tensor, device) -> torch.Tensor:
    """A host tensor on `device` without waiting for the device's queue: a plain copy to CUDA from
    pageable memory synchronizes the stream, one from pinned memory with non_blocking does not."""
    device = torch.device("cpu") if device is None else torch.device(device)
    if device.type != "cuda":
        return host.to(device)
    return host.pin_memory().to(device, non_blocking=True)
