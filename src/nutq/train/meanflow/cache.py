"""Teacher paths on disk (`--cache-teacher DIR`): computed once, read by every epoch.

A path is the teacher's states at its grid knots, (K+1, 80, T) for one example and one noise draw
(`inputs.example_noise(seed, index, draw)`), so a cached run and an on-the-fly run see identical
targets. Layout::

    DIR/cache.json                 what the paths depend on (teacher weights, data, seed, draws, grid)
    DIR/shard-NNNNN.safetensors    examples [N·shard_size, (N+1)·shard_size), every draw: "<index>.<draw>"

Each shard is written to a temporary name and renamed, so a shard that exists is complete and an
interrupted `build` resumes at the first missing one. A cache made for other weights, data or
settings is refused rather than silently reused.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import torch

from nutq.errors import NutqError

from .inputs import FlowBatch, batch_noise, collate, flow_inputs
from .teacher import TeacherPath, teacher_path

__all__ = ["TeacherCache", "CacheError"]

CACHE_FILE = "cache.json"
FORMAT = "nutq-meanflow-teacher-cache"


class CacheError(NutqError):
    """A teacher cache that does not belong to this run, or is damaged."""


class TeacherCache:
    def __init__(self, root: str | Path, key: dict, *, shard_size: int = 64):
        self.root = Path(root)
        self.key = {"format": FORMAT, "version": 1, **key}
        self.shard_size = shard_size
        self._loaded: OrderedDict[int, dict] = OrderedDict()
        meta_path = self.root / CACHE_FILE
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise CacheError(f"unreadable teacher cache index {meta_path}: {e}") from e
            if meta.get("key") != self.key:
                diff = sorted(k for k in set(self.key) | set(meta.get("key", {}))
                              if meta.get("key", {}).get(k) != self.key.get(k))
                raise CacheError(f"{self.root} caches another teacher/data/settings (differs in {', '.join(diff)}); "
                                 "use another --cache-teacher directory or delete it")
            self.shard_size = int(meta["shard_size"])
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            meta_path.write_text(json.dumps({"key": self.key, "shard_size": shard_size}, indent=1))

    @property
    def draws(self) -> int:
        return int(self.key["draws"])

    def shard_path(self, s: int) -> Path:
        return self.root / f"shard-{s:05d}.safetensors"

    def n_shards(self, n_examples: int) -> int:
        return -(-n_examples // self.shard_size)

    def missing(self, n_examples: int) -> list[int]:
        return [s for s in range(self.n_shards(n_examples)) if not self.shard_path(s).exists()]

    @torch.no_grad()
    def build(self, dataset, teacher_flow, *, batch_size: int = 4, progress=None) -> int:
        """Compute every missing shard; returns how many were written. `progress(n)` is called
        after each example's draws are done."""
        from safetensors.torch import save_file

        written = 0
        n = len(dataset)
        est = teacher_flow.decoder.estimator
        dev = est.final_proj.weight.device
        for s in self.missing(n):
            lo, hi = s * self.shard_size, min(n, (s + 1) * self.shard_size)
            out = {}
            for start in range(lo, hi, batch_size):
                idx = list(range(start, min(hi, start + batch_size)))
                batch = collate([dataset[i] for i in idx], idx).to(dev)
                fi = flow_inputs(teacher_flow, batch)
                for d in range(self.draws):
                    path = teacher_path(est, batch_noise(batch, self.key["seed"], [d] * len(idx), dev), fi,
                                        self.key["teacher_steps"], self.key["cfg_rate"])
                    for row, i in enumerate(idx):
                        n_i = int(batch.mel_len[row])
                        out[f"{i}.{d}"] = path.states[:, row, :, :n_i].float().cpu().contiguous()
                if progress:
                    progress(len(idx))
            tmp = self.shard_path(s).with_name(f".{self.shard_path(s).name}.tmp{os.getpid()}")
            save_file(out, str(tmp))
            os.replace(tmp, self.shard_path(s))
            written += 1
        return written

    def _shard(self, s: int) -> dict:
        from safetensors.torch import load_file

        if s not in self._loaded:
            p = self.shard_path(s)
            if not p.exists():
                raise CacheError(f"teacher cache shard {p} is missing; build the cache first")
            self._loaded[s] = load_file(str(p))
            while len(self._loaded) > 2:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(s)
        return self._loaded[s]

    def path(self, batch: FlowBatch, draws: list[int], grid: torch.Tensor, device) -> TeacherPath:
        """The cached paths of a collated batch, padded to its frames: TeacherPath (K+1, B, 80, T)."""
        k1 = grid.numel()
        states = torch.zeros(k1, len(draws), batch.cond.size(1), batch.n_frames)
        for row, (i, d) in enumerate(zip(batch.index.tolist(), draws)):
            t = self._shard(i // self.shard_size).get(f"{i}.{d % self.draws}")
            if t is None or t.shape[0] != k1 or t.shape[-1] != int(batch.mel_len[row]):
                raise CacheError(f"teacher cache entry {i}.{d % self.draws} is missing or has the wrong shape")
            states[:, row, :, : t.shape[-1]] = t
        return TeacherPath(grid.to(device), states.to(device))
