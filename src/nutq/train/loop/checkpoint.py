"""Training checkpoints that resume bit-for-bit.

One file holds what a run needs to continue as if never stopped: the trainable model state (the
task decides what that is: all weights, unfrozen ones, LoRA adapters), the optimizer and scheduler
states, the loop's counters and data position, and every RNG state (Python, NumPy, torch CPU and
CUDA). Files are written to a temporary name and renamed, so an interrupt during the write never
leaves a truncated checkpoint behind, and loaded with `weights_only=True` (no pickled code).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import NutqError

__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "CheckpointFormatError"]

FORMAT = 1


class CheckpointFormatError(NutqError, RuntimeError):
    """A training checkpoint is unreadable or was written by another kind of run."""


def rng_state() -> dict[str, Any]:
    """All RNG states as plain tensors/ints (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, kind: str, model: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, scheduler: Any, loop: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically. `kind` names the trainer (checked on load); `loop` holds the
    counters and data position; `extra` anything else JSON-like the trainer wants back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "kind": kind, "model": {k: v.detach().cpu() for k, v in model.items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
            "loop": loop, "rng": rng_state(), "extra": extra or {}}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path, *, kind: str) -> dict[str, Any]:
    """The checkpoint's contents (RNG states are NOT applied: call `set_rng_state(ck["rng"])`
    once the model and optimizer are restored, right before continuing)."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointFormatError(f"{path}: no such training checkpoint") from None
    except Exception as e:  # a torn or foreign file: say which, not a pickle traceback
        raise CheckpointFormatError(f"{path}: unreadable training checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointFormatError(f"{path}: not a nutq training checkpoint (format {FORMAT})")
    if blob.get("kind") != kind:
        raise CheckpointFormatError(f"{path}: a {blob.get('kind')!r} checkpoint, this is a {kind!r} run")
    return blob
