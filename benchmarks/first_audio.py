"""First audio of one stream, before/after a code change, side by side (CPU; issue 14, point 5).

Each variant is a worker process with its own `PYTHONPATH` (a source tree) that loads the model
once; the driver asks them in turn (interleaved, `--runs` rounds after one warm-up each) for one
measurement: `async for` over `TTS.astream(text)` until the first chunk, wall time from the call,
the way the server reads a stream. Variants: `SRC` (this tree's single runtime path) and, from an
older tree, `SRC:scheduler` / `SRC:thread` (its `TTS(scheduler=True/False)`). Writes JSON.

    python benchmarks/first_audio.py --model-dir DIR --variant src --variant /tmp/old/src:scheduler \
        --variant /tmp/old/src:thread --runs 7 --json benchmarks/results/first_audio.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

TEXT = "مرحبا بكم في نطق، هذا اختبار قصير."


def worker(model_dir: str, mode: str | None) -> None:
    import asyncio

    import torch

    from nutq.engine.sampling import SamplingParams
    from nutq.tts import TTS

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    kw = {"max_sessions": 1}
    if mode is not None:
        kw["scheduler"] = mode == "scheduler"
    tts = TTS.from_local(model_dir, device="cpu", **kw)
    params = SamplingParams(max_new_tokens=60, ignore_eos=True)

    async def once(seed: int) -> float:
        t0 = time.perf_counter()
        stream = tts.astream(TEXT, params=params, seed=seed)
        async for _ in stream:
            break
        dt = time.perf_counter() - t0
        await stream.aclose()
        return dt

    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps({"first_audio_ms": 1e3 * asyncio.run(once(int(line)))}), flush=True)
    tts.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--variant", action="append", required=True, help="SRC or SRC:scheduler / SRC:thread")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--json")
    args = ap.parse_args()
    procs = {}
    for v in args.variant:
        src, _, mode = v.partition(":")
        env = dict(os.environ, PYTHONPATH=os.path.abspath(src), OMP_NUM_THREADS=os.environ.get("BENCH_THREADS", "2"))
        cmd = [sys.executable, __file__, "--worker", args.model_dir] + ([mode] if mode else [])
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert p.stdout.readline().strip() == "ready", f"worker {v} failed to start"
        procs[v] = p
    times: dict[str, list[float]] = {v: [] for v in procs}
    for r in range(args.runs + 1):  # round 0 warms up and is not counted
        for v, p in procs.items():
            p.stdin.write(f"{r}\n")
            p.stdin.flush()
            ms = json.loads(p.stdout.readline())["first_audio_ms"]
            if r:
                times[v].append(ms)
    for p in procs.values():
        p.stdin.close()
        p.wait()
    result = {"model_dir": args.model_dir, "text": TEXT, "runs": args.runs, "machine": platform.machine(),
              "threads": int(os.environ.get("BENCH_THREADS", "2")),
              "variants": {v: {"median_ms": statistics.median(t), "min_ms": min(t), "all_ms": t} for v, t in times.items()}}
    for v, d in result["variants"].items():
        print(f"{v:40s} first audio median {d['median_ms']:7.1f} ms  min {d['min_ms']:7.1f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        main()
