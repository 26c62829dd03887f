"""Time to first audio per flow decoder, side by side with the official `generate()`, in one run.

    python benchmarks/flow_choice.py --model-dir /tmp/full --tokens 100 --rounds 3 --threads 1 \\
        --json benchmarks/results/flow_choice_cpu.json [--no-reference] [--dtypes fp32,bf16] \\
        [--flows cfm-10,cfm-10-cfg0,meanflow-2,meanflow-1] [--device cpu|cuda] [--no-full-streams]

The checkpoint must hold a meanflow file (`nutq make-checkpoint DIR --size full --meanflow`); the
built-in voice (10 s prompt) speaks one utterance of exactly `--tokens` T3 steps (EOS ignored).
Per dtype one `TTS` per decoder kind is loaded (T3 and S3Gen in that dtype; `cfm-10-cfg0` and
`meanflow-1` are per-stream `FlowOptions` of the same loaded models).

Two passes. First audio: every round runs the official `generate()` once (fp32, the reference
env's worker process, as `nutq bench --vs-reference`) and then every configuration once, in an
order that rotates per round, each stream stopped at its first audio; one short stream per
configuration (and one official call) warms up first. Whole streams: then every configuration
streams all `--tokens` once (real-time factor, renders, flow time per render). Reported: medians
of time to first audio and its speed-up against the official median, the first chunk's flow time,
T3 prefill and decode speed, and from the whole-stream pass the RTF and flow ms per render.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
from pathlib import Path

import torch

from nutq.bench.cli import DEFAULT_TEXT
from nutq.bench.latency import measure_stream
from nutq.engine.flow_options import FlowOptions
from nutq.engine.sampling import SamplingParams
from nutq.tts import TTS

FLOWS = {"cfm-10": FlowOptions("cfm"), "cfm-10-cfg0": FlowOptions("cfm", cfg_rate=0.0),
         "meanflow-2": FlowOptions("meanflow"), "meanflow-1": FlowOptions("meanflow", 1)}
FIRST = ("ttfa_ms", "first_chunk_flow_ms", "prefill_ms", "first_token_ms")
WHOLE = ("rtf", "flow_ms_per_render", "renders", "t3_tokens_per_s", "audio_s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3, help="counted rounds (one more warms up)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--flows", default=",".join(FLOWS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-reference", action="store_true", help="skip the official generate() (e.g. on a GPU box)")
    ap.add_argument("--no-full-streams", action="store_true", help="skip the whole-stream pass")
    ap.add_argument("--text", default=DEFAULT_TEXT)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    flows = [f for f in args.flows.split(",") if f]
    unknown = set(flows) - set(FLOWS)
    if unknown:
        ap.error(f"unknown flows {sorted(unknown)}; choose from {', '.join(FLOWS)}")
    dtypes = [d for d in args.dtypes.split(",") if d]
    torch.set_num_threads(args.threads)
    params = SamplingParams(max_new_tokens=args.tokens, ignore_eos=True)

    engines = {}  # (dtype, kind) -> TTS
    for dtype in dtypes:
        for kind in sorted({FLOWS[f].kind for f in flows}):
            engines[dtype, kind] = TTS.from_local(args.model_dir, device=args.device, dtype=dtype, flow_dtype=dtype,
                                                  flow=kind)
    configs = [(d, f) for d in dtypes for f in flows]

    worker = None
    if not args.no_reference:
        from nutq.bench.reference import OfficialWorker

        worker = OfficialWorker(args.model_dir, args.text, "ar", args.tokens, args.threads)
    samples = {f"{f}/{d}": [] for d, f in configs}
    official = []
    warm = SamplingParams(max_new_tokens=12, ignore_eos=True)
    try:
        if worker is not None:
            worker.run(99)
        for dtype, f in configs:
            measure_stream(engines[dtype, FLOWS[f].kind], args.text, params=warm, seed=99, segment=False, flow=FLOWS[f])
        for r in range(args.rounds):
            seed = 100 + r
            if worker is not None:
                official.append(worker.run(seed))
                print(f"round {r}: official generate {official[-1]['generate_s']:.2f} s", flush=True)
            order = configs[r % len(configs):] + configs[:r % len(configs)]
            for dtype, f in order:
                res = measure_stream(engines[dtype, FLOWS[f].kind], args.text, params=params, seed=seed,
                                     segment=False, flow=FLOWS[f], until_first_audio=True)
                samples[f"{f}/{dtype}"].append(res)
                print(f"round {r}: {f:12} {dtype}: TTFA {res['ttfa_ms']:8.0f} ms, first flow "
                      f"{res['first_chunk_flow_ms']:7.0f} ms", flush=True)
    finally:
        if worker is not None:
            worker.close()
    whole = {}
    if not args.no_full_streams:
        for dtype, f in configs:
            res = measure_stream(engines[dtype, FLOWS[f].kind], args.text, params=params, seed=100, segment=False,
                                 flow=FLOWS[f])
            whole[f"{f}/{dtype}"] = res
            print(f"whole stream: {f:12} {dtype}: RTF {res['rtf']:.2f}, flow/render {res['flow_ms_per_render']:.0f} ms "
                  f"over {res['renders']} renders", flush=True)

    table = {}
    off = statistics.median(o["generate_s"] for o in official) * 1e3 if official else None
    for name, runs in samples.items():
        med = {k: statistics.median(t[k] for t in runs) for k in FIRST}
        if off:
            med["ttfa_speedup_vs_official"] = off / med["ttfa_ms"]
        if name in whole:
            med.update({k: whole[name][k] for k in WHOLE})
        table[name] = {k: round(v, 3) for k, v in med.items()}
    result = {"when": dt.datetime.now().isoformat(timespec="seconds"), "device": args.device, "threads": args.threads,
              "tokens": args.tokens, "rounds": args.rounds, "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "model_dir": str(args.model_dir), "command": " ".join(sys.argv),
              "official_generate_ms": off, "official": official, "by_config": table,
              "trials": samples, "whole_streams": whole}
    print(json.dumps({"official_generate_ms": off, "by_config": table}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
