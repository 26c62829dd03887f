"""T3 decode: one batched step for n sessions vs n solo `decode_step`s, interleaved, one thread.

    python benchmarks/batched_step.py [OUT.json] [--size tiny|full] [--model-dir DIR] [--dtype fp32|bf16]
                                      [--rounds 7] [--steps 8] [--max-len 1500]

Sessions are prefilled once (different texts, alignment-guard probes on, as a session runs);
every round then times `steps` steps at the same positions for n = 1, 2, 4, 8 sessions: the
batched step with the eager span (max(pos) + 1, the CPU default), the batched step with the
static span (the whole cache of `--max-len`, what a CUDA graph runs), and n solo steps. The
order of the three rotates every round; round 0 warms up and is not counted; medians of the rest.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from nutq.engine.alignment import OFFICIAL
from nutq.engine.batched_step import BatchedStep
from nutq.engine.decode import decode_step, prefill
from nutq.engine.kv_pool import ROWS_PER_SESSION, KVPool
from nutq.models.random_init import randomize_module
from nutq.models.t3 import T3, T3_TINY

PROBES = OFFICIAL.heads
SESSIONS = (1, 2, 4, 8)


def load_t3(size: str, model_dir: str | None, dtype: str) -> T3:
    if size == "tiny":
        if dtype != "fp32":
            raise SystemExit("--size tiny is random fp32 weights; use --size full --model-dir DIR for other dtypes")
        return randomize_module(T3(T3_TINY), 0).eval()
    if model_dir is None:
        raise SystemExit("--size full needs --model-dir (e.g. one made by `nutq make-checkpoint --size full`)")
    from nutq.tts import TTS

    return TTS.from_local(model_dir, device="cpu", dtype=dtype).t3


def prefill_sessions(t3: T3, pool: KVPool) -> list[int]:
    """Prefill every slot with its own speaker and text (30..58 text ids); returns prompt lengths."""
    lengths = []
    for s in range(pool.slots):
        g = torch.Generator().manual_seed(s)
        with torch.inference_mode():
            cond = t3.conditioning(torch.randn(1, t3.cfg.speaker_dim, generator=g),
                                   torch.randint(0, t3.cfg.num_valid_speech, (1, 150), generator=g), 0.5)
        text = torch.randint(1, 2000, (30 + 4 * s,), generator=g)
        _, _, L = prefill(t3, cond, text, pool.cache.rows(ROWS_PER_SESSION * s, ROWS_PER_SESSION), PROBES)
        lengths.append(L)
    return lengths


def time_batched(step: BatchedStep, n: int, lengths: list[int], steps: int) -> float:
    slots = list(range(n))
    tokens = torch.full((n,), 100, dtype=torch.long)
    t = time.perf_counter()
    for i in range(steps):
        step(slots, tokens, [i + 1] * n, [lengths[s] + i for s in slots])
    return (time.perf_counter() - t) / steps


def time_solo(t3: T3, pool: KVPool, n: int, lengths: list[int], steps: int) -> float:
    tok = torch.tensor([100])
    views = [pool.cache.rows(ROWS_PER_SESSION * s, ROWS_PER_SESSION) for s in range(n)]
    t = time.perf_counter()
    for i in range(steps):
        for s in range(n):
            decode_step(t3, tok, i + 1, lengths[s] + i, views[s], PROBES)
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="benchmarks/results/batched_step_cpu.json")
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--model-dir")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="T3 weights and the KV pool")
    ap.add_argument("--max-len", type=int, default=1500, help="KV pool length (the server's default)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t3 = load_t3(args.size, args.model_dir, args.dtype)
    w = t3.speech_head.weight
    pool = KVPool(t3.cfg.llama, max(SESSIONS), args.max_len, device=w.device, dtype=w.dtype)
    lengths = prefill_sessions(t3, pool)
    steppers = {"batched_eager": BatchedStep(t3, pool, PROBES, static=False),
                "batched_static": BatchedStep(t3, pool, PROBES, static=True)}
    runs = {
        **{k: (lambda n, st=st: time_batched(st, n, lengths, args.steps)) for k, st in steppers.items()},
        "solo": lambda n: time_solo(t3, pool, n, lengths, args.steps),
    }
    samples = {k: {n: [] for n in SESSIONS} for k in runs}
    for r in range(args.rounds):
        order = list(runs)[r % len(runs):] + list(runs)[:r % len(runs)]
        for n in SESSIONS:
            for name in order:
                ms = 1000 * runs[name](n)
                if r:
                    samples[name][n].append(ms)
        if r:
            print(f"round {r}: " + ", ".join(f"n={n} batched {samples['batched_eager'][n][-1]:.1f} / solo "
                                             f"{samples['solo'][n][-1]:.1f} ms" for n in SESSIONS), flush=True)
    table = {}
    for n in SESSIONS:
        med = {k: statistics.median(samples[k][n]) for k in runs}
        table[str(n)] = {
            **{f"{k}_ms_per_step": round(v, 3) for k, v in med.items()},
            "speedup_eager_vs_solo": round(med["solo"] / med["batched_eager"], 2),
            "aggregate_tokens_per_s_batched_eager": round(1000 * n / med["batched_eager"], 1),
            "aggregate_tokens_per_s_solo": round(1000 * n / med["solo"], 1),
        }
    out = {
        "what": "T3 decode step time (one token for every session), ms; medians over rounds 1..",
        "size": args.size, "dtype": str(w.dtype), "device": str(w.device), "threads": 1,
        "probes": [list(p) for p in PROBES], "pool_max_len": args.max_len, "prompt_lengths": lengths,
        "rounds": args.rounds, "steps_per_round": args.steps,
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "by_sessions": table,
        "samples_ms": {k: {str(n): [round(x, 3) for x in v] for n, v in d.items()} for k, d in samples.items()},
    }
    print(json.dumps(table, indent=1))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
