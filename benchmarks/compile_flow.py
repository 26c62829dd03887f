"""Does `torch.compile` help the S3Gen flow estimator? Eager vs compiled, same renders, interleaved.

    python benchmarks/compile_flow.py [OUT.json] [--size tiny|full] [--model-dir DIR] [--device cpu|cuda]
        [--rounds 5] [--mode default|reduce-overhead|max-autotune]

The estimator (the CFM's ConditionalDecoder, 10 steps x 2 CFG rows per render) is ~all of a
streaming render's cost. Renders grow by a chunk at a time, so shapes change from call to call:
the estimator is compiled with `dynamic=True` (one graph for all lengths, not one per length).
Times the first compiled call (compilation), then steady-state calls on three render lengths,
eager and compiled alternating; reports medians and the largest difference between the two mels.
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

sys.path.insert(0, str(Path(__file__).parent))
from vocoder_batch import load_s3gen, requests, timed  # noqa: E402  (same models and renders)

from nutq.engine.token2wav import flow_mel  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="benchmarks/results/compile_flow_cpu.json")
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--model-dir")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mode", default="default")
    args = ap.parse_args()
    torch.set_num_threads(1)
    s3gen = load_s3gen(args.size, args.model_dir, args.device)
    dev = s3gen.flow.encoder_proj.weight.device
    reqs = requests(s3gen, 150)[:3]
    cfm = s3gen.flow.decoder
    eager = cfm.estimator
    compiled = torch.compile(eager, dynamic=True, mode=args.mode)

    def run(est, req) -> torch.Tensor:
        cfm.estimator = est
        try:
            return flow_mel(s3gen, req)
        finally:
            cfm.estimator = eager

    t = time.perf_counter()
    first = run(compiled, reqs[0])
    compile_s = time.perf_counter() - t
    diff = max(float((run(compiled, r) - run(eager, r)).abs().max()) for r in reqs)
    samples = {"eager": [], "compiled": []}
    for i in range(args.rounds):
        order = ("eager", "compiled") if i % 2 == 0 else ("compiled", "eager")
        for name in order:
            est = eager if name == "eager" else compiled
            samples[name].append(sum(timed(lambda r=r: run(est, r), dev) for r in reqs))
        print(f"round {i}: eager {samples['eager'][-1]:.0f} ms, compiled {samples['compiled'][-1]:.0f} ms", flush=True)
    med = {k: statistics.median(v) for k, v in samples.items()}
    out = {"what": "flow of 3 streaming renders (prompt 150-158 tokens, 40-58 tokens so far), ms per round; medians",
           "size": args.size, "device": str(dev), "mode": args.mode, "threads": torch.get_num_threads(),
           "compile_first_call_s": round(compile_s, 1), "eager_ms": round(med["eager"], 1),
           "compiled_ms": round(med["compiled"], 1), "speedup": round(med["eager"] / med["compiled"], 3),
           "max_abs_mel_diff": diff, "first_shape": list(first.shape), "torch": torch.__version__,
           "machine": platform.machine(), "samples_ms": samples}
    print(json.dumps({k: v for k, v in out.items() if k != "samples_ms"}, indent=1))
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
