"""`nutq train meanflow` and `nutq eval meanflow` (argument parsing; the work is imported on use)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_train_parser", "add_eval_parser"]


def _steps(s: str) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in s.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected step counts like 2,1, got {s!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"step counts must be >= 1, got {s!r}")
    return out


def add_train_parser(sub) -> None:
    p = sub.add_parser("meanflow", help="distil the 10-step S3Gen decoder into a 2-/1-step meanflow student",
                       description="MeanFlow distillation (JVP-free interval loss) of S3Gen's flow decoder. "
                                   "Writes OUT/s3gen_meanflow.safetensors (the official layout) when done; "
                                   "run again on the same OUT to resume an interrupted run exactly.")
    p.add_argument("--teacher", required=True, type=Path, help="checkpoint directory whose s3gen.pt is the teacher")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset (nutq data prepare) for this checkpoint")
    p.add_argument("--out", required=True, type=Path, help="run directory: checkpoints, logs, the export")
    p.add_argument("--cache-teacher", type=Path, metavar="DIR",
                   help="compute the teacher's paths once into DIR (sharded, resumable) and train from them")
    p.add_argument("--cache-draws", type=int, default=4, help="noise draws per example in the cache (default 4)")
    p.add_argument("--steps", type=_steps, default=(2, 1), help="step counts to oversample intervals of (default 2,1)")
    p.add_argument("--pairs-per-example", type=int, default=4, help="(t, r) pairs per example and batch (default 4)")
    p.add_argument("--p-deployed", type=float, default=0.5, help="share of pairs on the deployed intervals")
    p.add_argument("--p-equal", type=float, default=0.1, help="share of r = t pairs (flow matching on v_T)")
    p.add_argument("--consistency-weight", type=float, default=0.0, help="interval-consistency term (default off)")
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--export", choices=["ema", "raw"], default="ema", help="weights to export (default ema)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--clip-grad", type=float, default=1.0)
    p.add_argument("--eval-every", type=int, default=0, help="steps between held-out evaluations (0: at the end)")
    p.add_argument("--eval-examples", type=int, default=8)
    p.add_argument("--save-every", type=int, default=200, help="steps between checkpoints (default 200)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--autocast", choices=["auto", "bf16", "off"], default="auto",
                   help="auto: bf16 on CUDA for the student, fp32 on CPU (the teacher is always fp32)")
    p.add_argument("--no-tensorboard", action="store_true")
    p.set_defaults(func=_train)


def _train(args) -> int:
    from nutq.train.loop import LoopConfig

    from .objective import PairConfig
    from .trainer import DistillConfig, distil

    loop = LoopConfig.from_args(args)
    cfg = DistillConfig(pairs_per_example=args.pairs_per_example, consistency_weight=args.consistency_weight,
                        pairs=PairConfig(steps=args.steps, p_deployed=args.p_deployed, p_equal=args.p_equal),
                        ema_decay=args.ema_decay, eval_examples=args.eval_examples, cache_draws=args.cache_draws,
                        export=args.export)
    summary = distil(args.teacher, args.data, args.out, loop, cfg, cache_dir=args.cache_teacher, device=args.device)
    print(json.dumps({k: summary[k] for k in ("status", "step", "total_steps", "examples_per_s", "eval")}, indent=1))
    if summary["status"] != "done":
        print(f"interrupted at step {summary['step']}: run the same command again to resume")
        return 130
    print(summary["export"])
    return 0


def add_eval_parser(sub) -> None:
    p = sub.add_parser("meanflow", help="compare a meanflow student with the 10-step teacher on held-out data")
    p.add_argument("--teacher", required=True, type=Path, help="checkpoint directory (the 10-step teacher)")
    p.add_argument("--student", required=True, type=Path, help="the student's s3gen_meanflow.safetensors")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset (its val split is held out)")
    p.add_argument("--split", default="val")
    p.add_argument("--resemble", type=Path,
                   help="Resemble's s3gen_meanflow.safetensors to compare too (default: the teacher "
                        "directory's, when present and not the student)")
    p.add_argument("--max-examples", type=int, default=16)
    p.add_argument("--seed", type=int, default=1234, help="seeds every example's noise (the same for all decoders)")
    p.add_argument("--out", type=Path, default=Path("meanflow_eval.json"), help="JSON report (the PNG goes beside it)")
    p.add_argument("--samples", type=Path, metavar="DIR", help="write paired teacher/student WAVs here")
    p.add_argument("--max-samples", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_eval)


def _eval(args) -> int:
    from .evaluate import run_eval

    report = run_eval(args.teacher, args.student, args.data, split=args.split, resemble=args.resemble,
                      max_examples=args.max_examples, seed=args.seed, out=args.out, samples_dir=args.samples,
                      max_samples=args.max_samples, device=args.device)
    for name, m in report["methods"].items():
        print(f"{name:24s} L1 {m['mel_l1']:.4f}  {m['flow_ms_median']:8.1f} ms/render")
    print(f"student 2-step is {report['factor_2step']:.2f}x closer than {report['baseline_2step']}; "
          f"1-step {report['factor_1step']:.2f}x closer than teacher_euler1")
    print(args.out)
    return 0
