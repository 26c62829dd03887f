"""T3 fine-tuning step time: one optimizer step (forward, backward, clipping, AdamW) on a batch.

    python benchmarks/t3_train_step.py --model-dir DIR [--mode freeze|lora] [--batch 4]
        [--text 60] [--speech 250] [--prompt 150] [--steps 3] [--autocast off,bf16] [--device cpu]
        [--out benchmarks/results/t3_train_step_cpu_full.json]

A synthetic batch of the stated token lengths (250 speech tokens = 10 s of audio at 25 Hz) runs
through exactly what `nutq train t3` runs per step (the T3Task loss, the loop's autocast, clipping
and AdamW). The first step (allocation of the optimizer state) is reported on its own; the
median of the following --steps is the step time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--mode", choices=["freeze", "lora"], default="freeze")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--text", type=int, default=60)
    ap.add_argument("--speech", type=int, default=250)
    ap.add_argument("--prompt", type=int, default=150)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--autocast", default="off,bf16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from nutq.train.loop.driver import autocast
    from nutq.train.loop.schedule import make_adamw
    from nutq.train.t3.adapters import add_lora, freeze_first_layers, set_training_dropout, trainable_count
    from nutq.train.t3.loss import T3Batch
    from nutq.train.t3.trainer import T3Task, T3TrainOptions, load_base_t3

    model, _ = load_base_t3(args.model_dir, args.device)
    set_training_dropout(model)
    add_lora(model) if args.mode == "lora" else freeze_first_layers(model, 6)
    task = T3Task(model, [], T3TrainOptions(mode=args.mode))
    cfg, B = model.cfg, args.batch
    g = torch.Generator().manual_seed(0)
    text = torch.randint(1, 2000, (B, args.text), generator=g)
    text[:, 0], text[:, -1] = cfg.start_text, cfg.stop_text
    speech = torch.randint(0, cfg.start_speech, (B, args.speech), generator=g)
    speech[:, 0], speech[:, -1] = cfg.start_speech, cfg.stop_speech
    batch = T3Batch(text, torch.full((B,), args.text), speech, torch.full((B,), args.speech),
                    torch.randn(B, 256, generator=g), torch.randint(0, 6561, (B, args.prompt), generator=g),
                    torch.full((B,), 0.5))
    params = list(task.parameters())
    opt = make_adamw(params, 1e-5)
    dev = torch.device(args.device)
    results = {}
    for mode in args.autocast.split(","):
        times = []
        for _ in range(args.steps + 1):
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with autocast(mode if mode != "off" else "off", dev):
                loss, _ = task.loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        results[mode] = {"first_step_s": round(times[0], 3), "step_s_median": round(statistics.median(times[1:]), 3),
                         "steps_s": [round(t, 3) for t in times[1:]],
                         "tokens_per_s": round(B * (args.text + args.speech) / statistics.median(times[1:]), 1)}
        print(mode, results[mode], flush=True)
    try:
        import resource
        peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except ImportError:
        peak_rss_mb = None
    record = {"benchmark": "t3_train_step", "model_dir": args.model_dir, "mode": args.mode, "batch": B,
              "text_tokens": args.text, "speech_tokens": args.speech, "prompt_tokens": args.prompt,
              "trainable_parameters": trainable_count(model), "device": args.device,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
              "cpu": platform.processor() or platform.machine(), "peak_rss_mb": peak_rss_mb, "results": results,
              "command": " ".join(sys.argv)}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
