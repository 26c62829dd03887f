"""The training driver: run a `TrainTask` for N optimizer steps, resumably.

A trainer plugs in a task object; the driver owns everything generic:

    class MyTask:                       # the TrainTask protocol
        kind = "t3"                     # names the run; a checkpoint of another kind is refused
        device: torch.device
        def parameters(self): ...       # the trainable parameters (requires_grad=True)
        def collate(self, examples): ...           # list of dataset items -> a batch
        def loss(self, batch): ...      # -> (mean loss tensor, {"name": float, ...}) in train mode
        def evaluate(self): ...         # -> {"loss": float, ...} on held-out data (no grad)
        def state_dict(self): ...       # the trainable state to checkpoint ({name: tensor})
        def load_state_dict(self, sd): ...
        def train(self, mode=True): ... # switch the model between train and eval behaviour

    result = run(task, dataset, LoopConfig(...), out_dir)

One optimizer step = `grad_accum` micro-batches of `batch_size` examples in the seeded order of
`DataOrder`; each micro-batch's mean loss is divided by `grad_accum`, so the update equals that of
one batch of `batch_size * grad_accum` equally weighted micro-batches. Gradients are clipped to
`clip_grad` (global L2 norm), AdamW steps, the warmup/cosine schedule steps.

Checkpoints (`out_dir/checkpoints/last.pt`) are written at optimizer-step boundaries only: every
`save_every` steps, at the end of every epoch, at the end, and when SIGINT/SIGTERM arrives (the
signal sets a flag; the current step finishes, is saved, and the run returns "interrupted"; a
second SIGINT aborts at once). `run` on a directory holding a checkpoint continues from it, and
the continued run is bit-for-bit the uninterrupted one: same weights, optimizer moments, schedule,
data order and RNG streams.

Logs: `out_dir/logs/metrics.jsonl` and TensorBoard events in `out_dir/logs/tb/`; a tqdm bar with
ETA on a terminal.
"""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch

from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from .logs import RunLogger
from .order import DataOrder
from .schedule import make_adamw, warmup_cosine

__all__ = ["LoopConfig", "RunResult", "TrainTask", "run", "autocast", "CHECKPOINT_NAME"]

CHECKPOINT_NAME = "last.pt"
AUTOCAST_MODES = ("auto", "bf16", "off")


@dataclass(frozen=True)
class LoopConfig:
    batch_size: int = 4
    grad_accum: int = 1
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; None: `epochs` passes over the data
    lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 500
    min_lr_ratio: float = 0.0
    clip_grad: float | None = 1.0
    eval_every: int = 0  # steps; 0: evaluate at the end only
    save_every: int = 0  # steps; 0: only at epoch ends, the end and on a signal
    save_every_epoch: bool = True
    seed: int = 0
    autocast: str = "auto"  # auto: bf16 on CUDA, fp32 elsewhere; bf16: also on CPU; off
    tensorboard: bool = True
    progress: bool | None = None  # tqdm bar: None shows it only on a terminal

    def __post_init__(self):
        if self.grad_accum < 1:
            raise ValueError(f"grad_accum must be >= 1, got {self.grad_accum}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.autocast not in AUTOCAST_MODES:
            raise ValueError(f"autocast must be one of {AUTOCAST_MODES}, got {self.autocast!r}")

    @classmethod
    def from_args(cls, args) -> "LoopConfig":
        """From the loop options every `nutq train` command shares (--batch-size, --grad-accum,
        --epochs, --max-steps, --lr, --weight-decay, --warmup-steps, --clip-grad (0: off),
        --eval-every, --save-every, --seed, --autocast, --no-tensorboard)."""
        return cls(batch_size=args.batch_size, grad_accum=args.grad_accum, epochs=args.epochs,
                   max_steps=args.max_steps, lr=args.lr, weight_decay=args.weight_decay,
                   warmup_steps=args.warmup_steps, clip_grad=args.clip_grad or None, eval_every=args.eval_every,
                   save_every=args.save_every, seed=args.seed, autocast=args.autocast,
                   tensorboard=not args.no_tensorboard)


class TrainTask(Protocol):
    kind: str
    device: torch.device

    def parameters(self): ...
    def collate(self, examples: list) -> Any: ...
    def loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]: ...
    def evaluate(self) -> dict[str, float]: ...
    def state_dict(self) -> dict[str, torch.Tensor]: ...
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...
    def train(self, mode: bool = True) -> Any: ...


@dataclass
class RunResult:
    status: str  # "done" or "interrupted"
    step: int
    epoch: int
    total_steps: int
    checkpoint: Path | None
    train: dict[str, float] = field(default_factory=dict)  # the last step's metrics
    eval: dict[str, float] = field(default_factory=dict)  # the last evaluation


def autocast(mode: str, device: torch.device):
    """The autocast context for `mode` on `device` (a no-op context when it resolves to fp32)."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class _StopFlag:
    """SIGINT/SIGTERM set a flag checked between steps; a second SIGINT raises KeyboardInterrupt."""

    def __init__(self):
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run(task: TrainTask, dataset, cfg: LoopConfig, out_dir: str | Path, *, resume: bool = True,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
        extra_state: dict[str, Any] | None = None) -> RunResult:
    """Train `task` on `dataset` (map-style: len + getitem) into `out_dir` (see the module doc).

    `on_step(step, metrics)` is called after every optimizer step (tests use it to interrupt).
    `extra_state` (JSON-like) is stored in each checkpoint, e.g. what the trainer was asked to do.
    """
    out = Path(out_dir)
    ck_path = out / "checkpoints" / CHECKPOINT_NAME
    order = DataOrder(len(dataset), cfg.batch_size, cfg.seed)
    steps_per_epoch = -(-order.batches_per_epoch // cfg.grad_accum)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch
    params = [p for p in task.parameters() if p.requires_grad]
    opt = make_adamw(params, cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, warmup=cfg.warmup_steps, total=total, min_ratio=cfg.min_lr_ratio)
    step = 0
    last_eval: dict[str, float] = {}
    if resume and ck_path.exists():
        ck = load_checkpoint(ck_path, kind=task.kind)
        if ck["loop"]["total_steps"] != total:
            raise ValueError(f"{ck_path} belongs to a run of {ck['loop']['total_steps']} steps, this one has {total}")
        task.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        order.load_state_dict(ck["loop"]["order"])
        step, last_eval = ck["loop"]["step"], ck["loop"].get("eval", {})
        set_rng_state(ck["rng"])
    else:
        _seed_all(cfg.seed)

    def save() -> Path:
        loop = {"step": step, "total_steps": total, "order": order.state_dict(), "eval": last_eval,
                "config": asdict(cfg)}
        return save_checkpoint(ck_path, kind=task.kind, model=task.state_dict(), optimizer=opt,
                               scheduler=sched, loop=loop, extra=extra_state)

    def evaluate() -> dict[str, float]:
        task.train(False)
        with torch.no_grad(), autocast(cfg.autocast, task.device):
            metrics = task.evaluate()
        task.train(True)
        logger.log(step, "val", metrics)
        return metrics

    from tqdm import tqdm

    status, train_metrics, saved = "done", {}, ck_path if ck_path.exists() else None
    logger = RunLogger(out / "logs", tensorboard=cfg.tensorboard)
    bar = tqdm(total=total, initial=step, unit="step", dynamic_ncols=True, desc=task.kind,
               disable=None if cfg.progress is None else not cfg.progress)
    try:
        with _StopFlag() as stop:
            task.train(True)
            while step < total:
                if stop.requested:
                    status = "interrupted"
                    break
                t0 = time.perf_counter()
                epoch_before = order.epoch
                lr = sched.get_last_lr()[0]
                opt.zero_grad(set_to_none=True)
                sums: dict[str, float] = {}
                for _ in range(cfg.grad_accum):
                    batch = task.collate([dataset[i] for i in order.next_batch()])
                    with autocast(cfg.autocast, task.device):
                        loss, metrics = task.loss(batch)
                    (loss / cfg.grad_accum).backward()
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + float(v) / cfg.grad_accum
                if cfg.clip_grad:
                    sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad))
                opt.step()
                sched.step()
                step += 1
                train_metrics = dict(sums, lr=lr, epoch=order.epoch, step_s=time.perf_counter() - t0)
                logger.log(step, "train", train_metrics)
                bar.update(1)
                bar.set_postfix(loss=f"{sums.get('loss', float('nan')):.4f}", lr=f"{lr:.2e}")
                if on_step is not None:
                    on_step(step, train_metrics)
                if (cfg.eval_every and step % cfg.eval_every == 0) or step == total:
                    last_eval = evaluate()
                epoch_done = order.epoch > epoch_before
                if (step == total or (cfg.save_every and step % cfg.save_every == 0)
                        or (cfg.save_every_epoch and epoch_done)):
                    saved = save()
            if status == "interrupted":
                saved = save()
    finally:
        bar.close()
        logger.close()
    return RunResult(status, step, order.epoch, total, saved, train_metrics, last_eval)
