"""T3 prefill of sessions admitted together: one padded forward (`decode.prefill_many`) vs one
`prefill` per session, interleaved, one thread.

    python benchmarks/batched_prefill.py [OUT.json] [--size tiny|full] [--model-dir DIR]
                                         [--rounds 3] [--sessions 1 2 4]

Each session has its own speaker and a text of 30 + 8·i ids (prompts of different lengths, so the
batch pads to the longest), alignment-guard probes on, as the scheduler runs it. Every round
times both ways for every n, in alternating order; round 0 warms up and is not counted; medians
of the rest. Writes JSON.
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

from nutq.engine.alignment import OFFICIAL
from nutq.engine.decode import prefill_many, prefill_prompt
from nutq.engine.kv_pool import ROWS_PER_SESSION, KVPool

sys.path.insert(0, str(Path(__file__).parent))
from batched_step import load_t3  # noqa: E402

PROBES = OFFICIAL.heads


def prompts(t3, n: int) -> list[torch.Tensor]:
    out = []
    for s in range(n):
        g = torch.Generator().manual_seed(s)
        with torch.inference_mode():
            cond = t3.conditioning(torch.randn(1, t3.cfg.speaker_dim, generator=g),
                                   torch.randint(0, t3.cfg.num_valid_speech, (1, 150), generator=g), 0.5)
            out.append(t3.prefill_embeds(cond, torch.randint(1, 2000, (30 + 8 * s,), generator=g)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="benchmarks/results/batched_prefill_cpu.json")
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--model-dir")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4])
    args = ap.parse_args()
    if args.rounds < 1 or any(n < 1 for n in args.sessions):
        ap.error("--rounds and --sessions must be >= 1")
    torch.set_num_threads(1)
    t3 = load_t3(args.size, args.model_dir)
    top = max(args.sessions)
    pool = KVPool(t3.cfg.llama, top, 256, dtype=t3.speech_head.weight.dtype)
    views = [pool.cache.rows(ROWS_PER_SESSION * s, ROWS_PER_SESSION) for s in range(top)]
    embeds = prompts(t3, top)
    times = {n: {"batched": [], "one_by_one": []} for n in args.sessions}
    for r in range(args.rounds + 1):
        for n in args.sessions:
            ways = {"batched": lambda: prefill_many(t3, embeds[:n], views[:n], PROBES),
                    "one_by_one": lambda: [prefill_prompt(t3, e, v, PROBES) for e, v in zip(embeds[:n], views[:n])]}
            for name in (sorted(ways) if r % 2 else sorted(ways, reverse=True)):
                t0 = time.perf_counter()
                ways[name]()
                if r:
                    times[n][name].append(1e3 * (time.perf_counter() - t0))
    result = {"size": args.size, "threads": 1, "rounds": args.rounds, "machine": platform.machine(),
              "prompt_lengths": [e.shape[1] for e in embeds],
              "ms": {n: {k: round(statistics.median(v), 1) for k, v in d.items()} for n, d in times.items()},
              "all_ms": times}
    for n, d in result["ms"].items():
        print(f"n={n}: batched {d['batched']:9.1f} ms   one by one {d['one_by_one']:9.1f} ms")
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
