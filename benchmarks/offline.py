"""Offline synthesis of exactly 100 speech tokens: nutq vs the official chatterbox-tts 0.1.7, side by side.

    python benchmarks/offline.py --ckpt /tmp/full [--runs 5] [--threads N] [--out benchmarks/results/offline.json]

`--ckpt` is a full-size checkpoint (`nutq make-checkpoint /tmp/full --size full`); both sides load the
same files. Each side lives in its own worker process that loads the model once: nutq here
(`--worker`), the official package in the reference env (benchmarks/offline_official.py, run with
its python, $NUTQ_REFENV or ~/.cache/nutq-refenv). The driver alternates the two (one warm-up run
each, not counted, then `--runs` rounds of nutq, official) and reports medians, because this
2-core machine is shared and noisy. `--threads` sets torch's intra-op threads in both workers
(default: torch's own choice); on an oversubscribed machine 1 thread avoids the stalls of a
2-thread op waiting for its second thread to be scheduled.

The same 100 tokens are forced on both sides, followed by EOS, so both run 101 full T3 decode
steps (CFG, two rows) and S3Gen turns exactly 100 tokens (4 s of audio) into speech: nutq through
`forced_tokens` in its decode loop, the official by replaying them in place of `torch.multinomial`
(its sampling processors still run). Timed per run: T3 (token generation), S3Gen (flow + HiFT),
total (`synthesize` / `generate` wall time). The official `generate` always applies the Perth
watermark; it is timed separately and reported both inside and outside its total. nutq runs with
`watermark=False` (resemble-perth is not installed in its env).
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEXT = "مرحبا بكم في نطق، هذا اختبار لسرعة التوليد على المعالج."
N_TOKENS = 100
SEED = 0


def forced_tokens() -> list[int]:
    import random

    rng = random.Random(SEED)
    return [rng.randrange(6561) for _ in range(N_TOKENS)]


def protocol_stdout():
    """The worker's reply channel: the real stdout; everything else that prints goes to stderr."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr
    return out


def nutq_worker(ckpt: str, threads: int | None) -> None:
    import torch

    import nutq.tts as tts_mod
    from nutq.engine.generate import generate_speech_tokens

    reply = protocol_stdout()
    if threads:
        torch.set_num_threads(threads)
    tts = tts_mod.TTS.from_local(ckpt)
    eos = tts.t3.cfg.stop_speech
    times: dict[str, float] = {}

    def timed_generate(t3, cond, text_ids, params, **kw):
        t = time.perf_counter()
        res = generate_speech_tokens(t3, cond, text_ids, params, **kw, forced_tokens=forced + [eos])
        times["t3"] = time.perf_counter() - t
        return res

    s3gen_inference = tts.s3gen.inference

    def timed_s3gen(*a, **kw):
        t = time.perf_counter()
        out = s3gen_inference(*a, **kw)
        times["s3gen"] = time.perf_counter() - t
        return out

    tts_mod.generate_speech_tokens = timed_generate
    tts.s3gen.inference = timed_s3gen
    reply.write(json.dumps({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        forced = req["tokens"]
        t = time.perf_counter()
        wav = tts.synthesize(req["text"], "ar", seed=SEED, normalize=False, watermark=False)
        times["total"] = time.perf_counter() - t
        reply.write(json.dumps(dict(times, samples=len(wav))) + "\n")


class Worker:
    def __init__(self, name: str, argv: list[str]):
        self.name = name
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"{self.name} worker exited (code {self.proc.wait()}); see its stderr above")
        return json.loads(line)

    def run(self, tokens: list[int]) -> dict:
        self.proc.stdin.write(json.dumps({"text": TEXT, "tokens": tokens}) + "\n")
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def refenv_python() -> str:
    root = Path(os.environ.get("NUTQ_REFENV", Path.home() / ".cache" / "nutq-refenv"))
    py = root / "venv" / "bin" / "python"
    if not py.exists():
        raise SystemExit(f"reference env not found at {root} (make refenv)")
    return str(py)


def summary(runs: list[dict]) -> dict:
    keys = [k for k in runs[0] if k != "samples"]
    return {k: {"median_s": statistics.median(r[k] for r in runs), "min_s": min(r[k] for r in runs),
                "max_s": max(r[k] for r in runs)} for k in keys}


def paired_ratios(runs: dict[str, list[dict]]) -> dict:
    """Median over rounds of official / nutq time: each round's two runs saw about the same load."""
    keys = [k for k in runs["nutq"][0] if k != "samples"]
    return {k: statistics.median(o[k] / n[k] for n, o in zip(runs["nutq"], runs["official"])) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="full-size checkpoint directory")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, help="torch intra-op threads in both workers")
    ap.add_argument("--out", default=str(HERE / "results" / "offline.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return nutq_worker(args.ckpt, args.threads)
    if args.runs < 1:
        ap.error("--runs must be >= 1")

    tokens = forced_tokens()
    nutq_argv = [sys.executable, __file__, "--worker", "--ckpt", args.ckpt]
    official_argv = [refenv_python(), str(HERE / "offline_official.py"), args.ckpt]
    if args.threads:
        nutq_argv += ["--threads", str(args.threads)]
        official_argv.append(str(args.threads))
    load = {}
    t = time.perf_counter()
    workers = {"nutq": Worker("nutq", nutq_argv)}
    load["nutq"] = time.perf_counter() - t
    t = time.perf_counter()
    workers["official"] = Worker("official", official_argv)
    load["official"] = time.perf_counter() - t
    runs: dict[str, list[dict]] = {k: [] for k in workers}
    loadavg = [os.getloadavg()[0]]
    try:
        for k, w in workers.items():  # warm-up (first-call allocations, lazy imports)
            w.run(tokens)
        for i in range(args.runs):
            for k, w in workers.items():
                r = w.run(tokens)
                if r["samples"] != 960 * N_TOKENS:
                    raise SystemExit(f"{k} produced {r['samples']} samples, expected {960 * N_TOKENS}")
                runs[k].append(r)
                print(f"run {i + 1}/{args.runs} {k:8s} " + " ".join(f"{m}={v:.2f}s" for m, v in r.items()
                                                                    if m != "samples"), flush=True)
            loadavg.append(os.getloadavg()[0])
    finally:
        for w in workers.values():
            w.close()

    result = {
        "benchmark": "offline synthesis, 100 forced speech tokens (4.0 s of 24 kHz audio), full-size random weights",
        "command": "python benchmarks/offline.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"), "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                                       "load_average_1m": loadavg},
        "text": TEXT, "tokens": N_TOKENS, "runs": args.runs, "order": "interleaved nutq, official after one warm-up each",
        "workers": {k: w.info for k, w in workers.items()}, "load_s": load,
        "median": {k: summary(v) for k, v in runs.items()},
        "official_over_nutq_paired_median": paired_ratios(runs), "per_run": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False))
    for k, s in result["median"].items():
        print(f"{k:8s} medians: " + " ".join(f"{m}={v['median_s']:.2f}s" for m, v in s.items()))
    print("official/nutq, median of paired rounds: "
          + " ".join(f"{m}={v:.2f}" for m, v in result["official_over_nutq_paired_median"].items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
