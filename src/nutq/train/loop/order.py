"""Seeded, resumable order of micro-batches over a map-style dataset.

Epoch e visits the examples in the permutation drawn from a generator seeded by (seed, e) alone, so
the order of any epoch can be rebuilt from the position (epoch, batch index) without replaying the
epochs before it: that position is all a checkpoint needs to continue exactly where it stopped.
The last batch of an epoch may be short (no example is skipped).
"""

from __future__ import annotations

import torch

__all__ = ["DataOrder"]


class DataOrder:
    def __init__(self, n: int, batch_size: int, seed: int = 0, *, shuffle: bool = True):
        if n < 1:
            raise ValueError("the dataset is empty")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.epoch, self.index = 0, 0
        self._perm: torch.Tensor | None = None

    @property
    def batches_per_epoch(self) -> int:
        return -(-self.n // self.batch_size)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g)

    def next_batch(self) -> list[int]:
        """Indices of the next micro-batch; advances the position (rolling over into the next epoch)."""
        if self._perm is None:
            self._perm = self._permutation(self.epoch)
        start = self.index * self.batch_size
        out = self._perm[start:start + self.batch_size].tolist()
        self.index += 1
        if self.index >= self.batches_per_epoch:
            self.epoch, self.index, self._perm = self.epoch + 1, 0, None
        return out

    def state_dict(self) -> dict:
        return {"n": self.n, "batch_size": self.batch_size, "seed": self.seed, "shuffle": self.shuffle,
                "epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict) -> None:
        mine = (self.n, self.batch_size, self.seed, self.shuffle)
        theirs = (state["n"], state["batch_size"], state["seed"], state["shuffle"])
        if mine != theirs:
            raise ValueError(f"checkpoint was written for (examples, batch, seed, shuffle) = {theirs}, "
                             f"this run has {mine}: resuming would not continue the same order")
        self.epoch, self.index, self._perm = state["epoch"], state["index"], None
