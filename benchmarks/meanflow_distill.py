"""Bounded meanflow distillation run + evaluation, one JSON result.

    flock /tmp/nutq-heavy.lock python benchmarks/meanflow_distill.py --teacher CKPT --data PREPARED \
        --out DIR --max-steps 500 --json benchmarks/results/meanflow_distill.json

Trains with `nutq.train.meanflow.trainer.distil` (the code behind `nutq train meanflow`), then
runs `nutq eval meanflow`'s evaluation on the held-out split and records training time, throughput
and the L1 factors (how many times closer to the 10-step teacher the student is than the teacher's
own naive 2- and 1-step Euler).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True, type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--max-steps", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup-steps", type=int, default=50)
    ap.add_argument("--eval-examples", type=int, default=16)
    ap.add_argument("--json", required=True, type=Path)
    a = ap.parse_args()

    from nutq.train.loop import LoopConfig
    from nutq.train.meanflow.evaluate import run_eval
    from nutq.train.meanflow.trainer import DistillConfig, distil

    loop = LoopConfig(batch_size=a.batch_size, max_steps=a.max_steps, lr=a.lr, warmup_steps=a.warmup_steps,
                      weight_decay=0.0, save_every=100, progress=False)
    cfg = DistillConfig(eval_examples=4)
    t0 = time.perf_counter()
    summary = distil(a.teacher, a.data, a.out, loop, cfg)
    train_s = time.perf_counter() - t0
    report = run_eval(a.teacher, summary["export"], a.data, max_examples=a.eval_examples, out=a.out / "eval.json")
    result = {
        "command": "benchmarks/meanflow_distill.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items()),
        "machine": {"cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads(),
                    "omp": os.environ.get("OMP_NUM_THREADS"), "shared": True},
        "train": {"steps": summary["step"], "seconds": train_s, "examples_per_s": summary["examples_per_s"],
                  "final_train": summary["train"], "final_val": summary["eval"]},
        "eval": {k: report[k] for k in ("examples", "frames", "factor_2step", "baseline_2step", "factor_1step")},
        "mel_l1": {k: v["mel_l1"] for k, v in report["methods"].items()},
        "flow_ms_median": {k: v["flow_ms_median"] for k, v in report["methods"].items()},
        "band_db_vs_teacher": {k: v["band_db_vs_teacher"] for k, v in report["methods"].items()},
    }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["eval"], indent=1))


if __name__ == "__main__":
    main()
