"""`nutq train t3`: fine-tune T3 from a checkpoint on a prepared dataset.

The base T3 is loaded from the checkpoint directory (official layout), either its first N Llama
layers are frozen (default 6) or LoRA adapters are trained instead, and the generic loop
(`nutq.train.loop`) runs it: AdamW, warmup + cosine, gradient accumulation, clipping, bf16
autocast on CUDA, evaluation on the validation split, checkpoints every epoch and on interrupt,
exact resume. The loss is the next-token cross-entropy of text + speech over the official training
forward (see `loss.py`); the perceiver's attention dropout is on while training, as officially.
When the run completes, `OUT/model/` is exported (see `export.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ...checkpoints import files as ckfiles
from ...models.registry import configs_from_sidecar, load_component
from ...models.t3 import T3
from ..loop import LoopConfig, RunResult, run
from .adapters import add_lora, freeze_first_layers, set_training_dropout, trainable_count
from .batch import collate
from .export import export_t3
from .loss import OBJECTIVES, t3_losses
from .metrics import flat, heldout_metrics

__all__ = ["T3TrainOptions", "T3Task", "train_t3", "load_base_t3"]


@dataclass(frozen=True)
class T3TrainOptions:
    loop: LoopConfig = field(default_factory=LoopConfig)
    mode: str = "freeze"  # "freeze": train all but the first `freeze_layers` layers; "lora": adapters only
    freeze_layers: int = 6
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    text_weight: float = 1.0  # total loss = speech + text_weight * text
    objective: str = "next"
    device: str = "cpu"

    def __post_init__(self):
        if self.mode not in ("freeze", "lora"):
            raise ValueError(f"mode must be 'freeze' or 'lora', got {self.mode!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")


def load_base_t3(model_dir: str | Path, device: str = "cpu") -> tuple[T3, ckfiles.CheckpointFiles]:
    """The checkpoint's T3 in fp32, in fresh (writable) memory, on `device`."""
    files = ckfiles.resolve(model_dir)
    cfg = configs_from_sidecar(files.sidecar)["t3"]
    return load_component(files.root, "t3", cfg, dtype=torch.float32, device=device), files


class T3Task:
    kind = "t3"

    def __init__(self, model: T3, val, opts: T3TrainOptions):
        self.model, self.val, self.opts = model, val, opts
        self.device = next(model.parameters()).device
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]

    def parameters(self):
        return (p for p in self.model.parameters() if p.requires_grad)

    def collate(self, examples):
        return collate(examples, self.model.cfg)

    def loss(self, batch):
        out = t3_losses(self.model, batch, self.opts.objective)
        loss = out.speech + self.opts.text_weight * out.text
        return loss, {"loss": loss.item(), "text_loss": out.text.item(), "speech_loss": out.speech.item(),
                      "speech_acc": out.speech_accuracy}

    def evaluate(self):
        return flat(heldout_metrics(self.model, self.val, batch_size=self.opts.loop.batch_size,
                                    objective=self.opts.objective))

    def state_dict(self):
        params = dict(self.model.named_parameters())
        return {n: params[n] for n in self._names}

    def load_state_dict(self, state):
        params = dict(self.model.named_parameters())
        if set(state) != set(self._names):
            raise ValueError("checkpoint trains other parameters than this run (another --mode or --freeze-layers?)")
        with torch.no_grad():
            for n, v in state.items():
                params[n].copy_(v)

    def train(self, mode=True):
        self.model.train(mode)


def build_task(model_dir, prepared, opts: T3TrainOptions):
    from ..data.prepared import PreparedDataset

    train_set, val_set = PreparedDataset(prepared, "train"), PreparedDataset(prepared, "val")
    train_set.check_checkpoint(model_dir)
    torch.manual_seed(opts.loop.seed)  # LoRA's initial A matrices
    model, files = load_base_t3(model_dir, opts.device)
    set_training_dropout(model)
    if opts.mode == "lora":
        add_lora(model, opts.lora_rank, opts.lora_alpha, opts.lora_dropout)
    else:
        freeze_first_layers(model, opts.freeze_layers)
    return T3Task(model, val_set, opts), train_set, files


def train_t3(model_dir, prepared, out_dir, opts: T3TrainOptions, *, resume: bool = True,
             on_step=None) -> tuple[RunResult, Path | None]:
    """Train into `out_dir`; returns (the loop's result, the exported model dir or None if interrupted)."""
    task, train_set, files = build_task(model_dir, prepared, opts)
    info = {"base": str(files.root), "prepared": str(Path(prepared).resolve()), "options": asdict(opts),
            "trainable_parameters": trainable_count(task.model),
            "train_examples": len(train_set), "val_examples": len(task.val)}
    result = run(task, train_set, opts.loop, out_dir, resume=resume, on_step=on_step, extra_state=info)
    if result.status != "done":
        return result, None
    info.update(steps=result.step, epochs=result.epoch, final_eval=result.eval)
    task.model.eval()
    return result, export_t3(task.model, files, Path(out_dir) / "model", info)
