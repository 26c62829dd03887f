"""Reusable trainer infrastructure: deterministic data order, AdamW + warmup/cosine, exact-resume
checkpoints, JSONL + TensorBoard logs, and a driver that runs a `TrainTask` for N steps.

A trainer supplies a `TrainTask` (its model's trainable parameters, a `loss(batch)`, a
`collate(examples)`, an `evaluate()` and its trainable state) and calls `run(task, dataset, cfg,
out_dir)`; everything else (order, accumulation, clipping, autocast, schedule, checkpoints, signals,
logs, progress) lives here. See `driver.py` for the contract in one place.
"""

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .driver import LoopConfig, RunResult, TrainTask, run
from .logs import RunLogger
from .order import DataOrder
from .schedule import make_adamw, warmup_cosine

__all__ = ["DataOrder", "LoopConfig", "RunLogger", "RunResult", "TrainTask", "load_checkpoint", "make_adamw",
           "rng_state", "run", "save_checkpoint", "set_rng_state", "warmup_cosine"]
