"""Run logs: one JSON object per line (`metrics.jsonl`) and TensorBoard event files (`tb/`).

Every record carries the optimizer step; values are scalars. TensorBoard needs the `tensorboard`
package (the `train` extra); without it the run fails up front with how to install it, rather
than training for hours without the logs it was asked for.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from ...errors import NutqError

__all__ = ["RunLogger"]


class RunLogger:
    def __init__(self, log_dir: str | Path, *, tensorboard: bool = True):
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.dir / "metrics.jsonl", "a", encoding="utf-8")
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise NutqError("TensorBoard logging needs the `tensorboard` package: "
                                "pip install 'nutq[train]' (or pass --no-tensorboard)") from e
            self._tb = SummaryWriter(str(self.dir / "tb"))

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        """Append `values` of `split` ("train", "val", ...) at optimizer step `step`."""
        clean = {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}
        self._jsonl.write(json.dumps({"step": step, "split": split, "time": round(time.time(), 3), **clean}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
