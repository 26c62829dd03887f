"""Arguments of `nutq train t3` and `nutq eval t3` (the machinery is imported when they run)."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["add_train_parser", "add_eval_parser"]


def add_train_parser(sub) -> None:
    p = sub.add_parser("t3", help="fine-tune T3 on a prepared dataset (see README, 'Fine-tuning for a dialect')")
    p.add_argument("prepared", help="directory written by `nutq data prepare`")
    p.add_argument("--model-dir", required=True, help="base checkpoint (official layout)")
    p.add_argument("--out", required=True, help="run directory: checkpoints/, logs/, and model/ when done")
    p.add_argument("--mode", choices=["freeze", "lora"], default="freeze",
                   help="freeze the first --freeze-layers Llama layers and train the rest, or train LoRA adapters")
    p.add_argument("--freeze-layers", type=int, default=6)
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=32.0)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, help="optimizer steps (default: --epochs passes)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--warmup-steps", type=int, default=500)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--text-weight", type=float, default=1.0, help="loss = speech CE + this * text CE")
    p.add_argument("--eval-every", type=int, default=500, help="steps between validations (0: at the end only)")
    p.add_argument("--save-every", type=int, default=0, help="steps between checkpoints (epochs, the end and "
                   "interrupts always save)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--autocast", choices=["auto", "bf16", "off"], default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--no-tensorboard", action="store_true")
    p.add_argument("--fresh", action="store_true", help="ignore a checkpoint in --out instead of resuming it")
    p.set_defaults(func=_train)


def add_eval_parser(sub) -> None:
    p = sub.add_parser("t3", help="held-out loss/accuracy per dialect and A/B samples: base vs fine-tuned T3")
    p.add_argument("prepared", help="directory written by `nutq data prepare`")
    p.add_argument("--base", required=True, help="base checkpoint directory")
    p.add_argument("--tuned", required=True, help="fine-tuned checkpoint directory (RUN/model)")
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--split", default="val")
    p.add_argument("--samples", type=int, default=2, help="WAVs per dialect from each model (0: none)")
    p.add_argument("--max-tokens", type=int, default=400, help="speech-token cap per sample (25 per second)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_eval)


def _train(args) -> int:
    from ..loop import LoopConfig
    from .trainer import T3TrainOptions, train_t3

    loop = LoopConfig.from_args(args)
    opts = T3TrainOptions(loop=loop, mode=args.mode, freeze_layers=args.freeze_layers, lora_rank=args.lora_rank,
                          lora_alpha=args.lora_alpha, text_weight=args.text_weight, device=args.device)
    result, model_dir = train_t3(args.model_dir, args.prepared, args.out, opts, resume=not args.fresh)
    print(json.dumps({"status": result.status, "step": result.step, "total_steps": result.total_steps,
                      "checkpoint": str(result.checkpoint), "model": str(model_dir) if model_dir else None,
                      "eval": result.eval}, indent=1))
    return 0 if result.status == "done" else 130


def _eval(args) -> int:
    from .evaluate import eval_t3

    eval_t3(args.base, args.tuned, args.prepared, args.out, split=args.split, samples=args.samples,
                     batch_size=args.batch_size, max_tokens=args.max_tokens, seed=args.seed, device=args.device)
    print(Path(args.out, "report.md").read_text(encoding="utf-8"))
    return 0
