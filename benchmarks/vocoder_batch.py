"""Streaming renders' flow: B sessions in one batched call vs B solo calls, interleaved, one thread.

    python benchmarks/vocoder_batch.py [OUT.json] [--size tiny|full] [--model-dir DIR]
                                       [--rounds 5] [--rows 1,2,4,8] [--prompt-tokens 150] [--device cpu|cuda]
                                       [--flow cfm|meanflow] [--flow-steps N] [--flow-cfg-rate X]

Each of 8 sessions has its own voice prompt (`--prompt-tokens` + 0, 4, 8, ... tokens, so rows are
padded) and a render due in steady state (40 + 9·i tokens so far, not finalized), as the vocoder
thread sees them when several sessions' chunks fall due together. Every round times, for
B = 1, 2, 4, 8, `token2wav.flow_mels` on the first B renders and `token2wav.flow_mel` on each of
them in turn; the order of the two rotates every round; round 0 warms up and is not counted;
medians of the rest. Only the flow is timed (HiFT runs per session either way). At full size on
one CPU thread a solo call takes ~16 s, so use e.g. `--rows 1,2 --rounds 2` there.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from nutq.engine.flow_options import KINDS, FlowOptions
from nutq.engine.token2wav import FlowRequest, flow_mel, flow_mels
from nutq.models.random_init import randomize_module
from nutq.models.registry import build, build_meanflow, configs_for_size
from nutq.models.s3gen.model import RefDict, S3Gen

MAX_ROWS = 8


def load_s3gen(size: str, model_dir: str | None, device: str, flow: FlowOptions) -> S3Gen:
    if size == "tiny":
        cfg = configs_for_size("tiny")["s3gen"]
        model = build_meanflow(cfg) if flow.meanflow else build("s3gen", cfg)
        return randomize_module(model, 0, keep_suffixes=("_mel_filters", "window")).eval().to(device)
    if model_dir is None:
        raise SystemExit("--size full needs --model-dir (e.g. one made by `nutq make-checkpoint --size full`)")
    from nutq.tts import TTS

    return TTS.from_local(model_dir, device=device, flow=flow).s3gen


def requests(s3gen: S3Gen, prompt_tokens: int, solver) -> list[FlowRequest]:
    dev, n_mels = s3gen.flow.encoder_proj.weight.device, s3gen.cfg.flow.n_mels
    out = []
    for i in range(MAX_ROWS):
        g = torch.Generator().manual_seed(i)
        tp, tn = prompt_tokens + 4 * i, 40 + 9 * i
        ref = RefDict(torch.randint(0, 6561, (1, tp), generator=g), torch.tensor([tp]),
                      -5.0 + 2.0 * torch.randn(1, 2 * tp, n_mels, generator=g), torch.randn(1, 192, generator=g))
        out.append(FlowRequest(torch.randint(0, 6561, (1, tn), generator=g).to(dev), ref.to(dev), False,
                               torch.randn(1, n_mels, 2 * (tp + 200), generator=g).to(dev), solver))
    return out


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="benchmarks/results/vocoder_batch_cpu.json")
    ap.add_argument("--size", choices=("tiny", "full"), default="tiny")
    ap.add_argument("--model-dir")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", default="1,2,4,8", help="batch sizes B to time (at most 8)")
    ap.add_argument("--prompt-tokens", type=int, default=150, help="voice prompt of the first session (6 s)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--flow", choices=KINDS, default="cfm")
    ap.add_argument("--flow-steps", type=int)
    ap.add_argument("--flow-cfg-rate", type=float)
    args = ap.parse_args()
    flow = FlowOptions(args.flow, args.flow_steps, args.flow_cfg_rate)
    rows = tuple(int(b) for b in args.rows.split(","))
    if not rows or min(rows) < 1 or max(rows) > MAX_ROWS:
        raise SystemExit(f"--rows must list batch sizes in 1..{MAX_ROWS}")
    if args.rounds < 2:
        raise SystemExit("--rounds must be >= 2 (round 0 only warms up)")
    torch.set_num_threads(1)
    s3gen = load_s3gen(args.size, args.model_dir, args.device, flow)
    dev = s3gen.flow.encoder_proj.weight.device
    reqs = requests(s3gen, args.prompt_tokens, flow.solver())
    runs = {"batched": lambda b: flow_mels(s3gen, reqs[:b]),
            "solo": lambda b: [flow_mel(s3gen, r) for r in reqs[:b]]}
    samples = {k: {b: [] for b in rows} for k in runs}
    for r in range(args.rounds):
        order = list(runs)[r % 2:] + list(runs)[:r % 2]
        for b in rows:
            for name in order:
                ms = timed(lambda: runs[name](b), dev)
                if r:
                    samples[name][b].append(ms)
        if r:
            print(f"round {r}: " + ", ".join(f"B={b} batched {samples['batched'][b][-1]:.0f} / solo "
                                             f"{samples['solo'][b][-1]:.0f} ms" for b in rows), flush=True)
    table = {}
    for b in rows:
        med = {k: statistics.median(samples[k][b]) for k in runs}
        table[str(b)] = {"batched_ms": round(med["batched"], 2), "solo_calls_ms": round(med["solo"], 2),
                         "speedup": round(med["solo"] / med["batched"], 2),
                         "batched_ms_per_row": round(med["batched"] / b, 2)}
    out = {
        "what": "S3Gen flow (encoder + solver) for B steady-state renders: one batched call "
                "vs B solo calls, ms; medians over rounds 1..",
        "flow": flow.label,
        "size": args.size, "dtype": str(s3gen.dtype), "device": str(dev),
        "threads": torch.get_num_threads(),
        "rows": [{"prompt_tokens": r.ref.prompt_token.size(1), "tokens": r.tokens.size(1)} for r in reqs],
        "rounds": args.rounds, "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
        "by_rows": table,
        "samples_ms": {k: {str(b): [round(x, 2) for x in v] for b, v in d.items()} for k, d in samples.items()},
    }
    print(json.dumps(table, indent=1))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
