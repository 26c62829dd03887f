"""`nutq bench`: latency of streaming synthesis per stage, optionally side by side with the official.

    nutq bench --model-dir DIR [--text T] [--trials 5] [--tokens 100] [--vs-reference] [--json out.json]
    nutq bench --model-dir DIR --concurrency 1,4,16 [--arrival together|staggered|both] [--sequential]
    nutq bench --history

Results (medians over trials, every trial too) are appended as one JSON line to a history file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
from pathlib import Path

from ..cli_args import (add_dtype_argument, add_flow_arguments, add_speculative_arguments, flow_from_args,
                        speculative_from_args)
from ..errors import NutqError

DEFAULT_TEXT = "مرحبا، أنا نطق، مساعدك الصوتي. كيف يمكنني مساعدتك اليوم؟"
HISTORY = Path(os.environ.get("NUTQ_BENCH_HISTORY", Path.home() / ".cache" / "nutq" / "bench-history.jsonl"))
SHOWN = ("frontend_ms", "prefill_ms", "first_token_ms", "first_chunk_vocoder_ms", "first_chunk_flow_ms",
         "first_chunk_hift_ms", "flow_ms_per_render", "renders", "ttfa_ms", "ttfa_p95_ms",
         "t3_tokens", "t3_tokens_per_s", "chunks", "max_gap_ms", "underruns", "rtf", "audio_s", "peak_rss_mb",
         "peak_cuda_mb")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure streaming latency per stage (optionally vs the official package)")
    p.add_argument("--model-dir", type=Path, help="checkpoint directory (default: $NUTQ_MODEL_DIR)")
    p.add_argument("--text", default=DEFAULT_TEXT)
    p.add_argument("--lang", default="ar")
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--tokens", type=int, default=0, help="generate exactly this many speech tokens (EOS ignored)")
    p.add_argument("--segment", action="store_true",
                   help="speak the text phrase by phrase (default: one utterance, as the official generate)")
    p.add_argument("--guard", default="official", help="alignment guard profile: official, arabic or none")
    p.add_argument("--device", default="cpu")
    add_dtype_argument(p)
    add_flow_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--vs-reference", action="store_true",
                   help="interleave runs of the official package's generate() (needs `make refenv`)")
    p.add_argument("--concurrency", help="comma-separated stream counts (e.g. 1,4,16): N requests at once, "
                                         "each a sentence of nutq.bench.concurrency.SENTENCES")
    p.add_argument("--arrival", choices=["together", "staggered", "both"], default="together")
    p.add_argument("--stagger", type=float, default=0.25, help="seconds between staggered arrivals")
    p.add_argument("--sequential", action="store_true", help="also serve the same requests one at a time")
    p.add_argument("--plot", type=Path, help="with --concurrency: write a PNG of TTFA and RTF against N")
    p.add_argument("--speculative", metavar="DRAFT", help="T3 only: plain loop vs speculative decoding with DRAFT "
                   "(a draft.safetensors, 'target' or 'shortcut:N'); see nutq.bench.speculative")
    add_speculative_arguments(p)  # --draft: the streams below decode speculatively (the engine's path)
    p.add_argument("--json", type=Path, help="also write this run's results here")
    p.add_argument("--history-file", type=Path, default=HISTORY)
    p.add_argument("--history", action="store_true", help="show past results and exit")
    p.set_defaults(func=run)


def show_history(path: Path) -> int:
    if not path.exists():
        print(f"no history yet at {path}")
        return 0
    print(f"{'when':20} {'device':8} {'tok':>5} {'TTFA ms':>9} {'tok/s':>7} {'RTF':>6} {'vs official TTFA':>17}")
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a crash; the rest still shows
        m, ref = r.get("median", {}), r.get("ratios") or {}
        ratio = f"{ref['ttfa_speedup']:.1f}x" if "ttfa_speedup" in ref else "-"
        print(f"{r.get('when', '?')[:19]:20} {r.get('device', '?'):8} {m.get('t3_tokens', 0):5.0f} "
              f"{m.get('ttfa_ms', 0):9.0f} {m.get('t3_tokens_per_s', 0):7.1f} {m.get('rtf', 0):6.2f} {ratio:>17}")
    return 0


def run(args) -> int:
    if args.history:
        return show_history(args.history_file)
    import torch

    from ..engine.sampling import SamplingParams
    from ..tts import TTS
    from .latency import measure_stream, summarize

    if args.trials < 1 or args.warmup < 0 or args.tokens < 0:
        raise NutqError("--trials must be >= 1, --warmup and --tokens >= 0")
    model_dir = args.model_dir or os.environ.get("NUTQ_MODEL_DIR")
    if not model_dir:
        raise NutqError("no model: pass --model-dir (make one with `nutq make-checkpoint DIR --size full`)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.concurrency:
        return run_concurrency(args, model_dir)
    if args.speculative:
        from .speculative import run_speculative

        return run_speculative(args, model_dir)
    tts = TTS.from_local(model_dir, device=args.device, dtype=args.dtype, flow_dtype=args.flow_dtype,
                         flow=flow_from_args(args), **speculative_from_args(args))
    params = SamplingParams(max_new_tokens=args.tokens, ignore_eos=True) if args.tokens else SamplingParams()
    guard = None if args.guard == "none" else args.guard

    def ours(seed: int) -> dict:
        return measure_stream(tts, args.text, language=args.lang, params=params, seed=seed, guard=guard,
                              segment=args.segment)

    for i in range(args.warmup):
        ours(args.seed + 1000 + i)
    trials, ref_trials = [], []
    worker = None
    if args.vs_reference:
        from .reference import OfficialWorker

        worker = OfficialWorker(Path(model_dir), args.text, args.lang, args.tokens, args.threads)
        for i in range(args.warmup):
            worker.run(args.seed + 1000 + i)
    try:
        for i in range(args.trials):  # interleaved: the machine's noise hits both sides alike
            trials.append(ours(args.seed + i))
            print(f"trial {i}: nutq TTFA {trials[-1]['ttfa_ms']:.0f} ms, {trials[-1]['t3_tokens_per_s']:.1f} tok/s",
                  end="")
            if worker is not None:
                ref_trials.append(worker.run(args.seed + i))
                r = ref_trials[-1]
                print(f" | official generate {r['generate_s']:.2f} s, "
                      f"{r['t3_tokens'] / r['t3_s']:.1f} tok/s", end="")
            print(flush=True)
    finally:
        if worker is not None:
            worker.close()
    result = {"when": dt.datetime.now().isoformat(timespec="seconds"), "device": args.device,
              "dtype": args.dtype or "file", "flow_dtype": args.flow_dtype or "fp32", "flow": tts.flow.label,
              "text": args.text,
              "tokens": args.tokens, "segment": args.segment, "trials": trials,
              "median": summarize(trials), "threads": torch.get_num_threads(), "machine": platform.machine(),
              "model_dir": str(model_dir)}
    stats = tts.engine.stats()
    if stats is not None and stats.spec_rounds:
        result["speculative"] = {"draft": str(args.draft), "rounds": stats.spec_rounds,
                                 "acceptance_rate": stats.spec_acceptance_rate,
                                 "mean_accepted_length": stats.spec_accepted / stats.spec_rounds,
                                 "tokens_per_forward": stats.spec_tokens_per_forward}
    if ref_trials:
        med = {k: statistics.median(r[k] for r in ref_trials) for k in ("generate_s", "t3_s", "t3_tokens", "s3gen_s")}
        med["t3_tokens_per_s"] = statistics.median(r["t3_tokens"] / r["t3_s"] for r in ref_trials)
        result["official"] = {"trials": ref_trials, "median": med}
        result["ratios"] = {
            "ttfa_speedup": 1e3 * med["generate_s"] / result["median"]["ttfa_ms"],
            "t3_tokens_per_s_ratio": result["median"]["t3_tokens_per_s"] / med["t3_tokens_per_s"],
        }
    _print(result)
    args.history_file.parent.mkdir(parents=True, exist_ok=True)
    with args.history_file.open("a") as f:
        f.write(json.dumps(result, ensure_ascii=False) + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=1))
    return 0


def _counts(spec: str) -> list[int]:
    try:
        ns = [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        ns = []
    if not ns or min(ns) < 1:
        raise NutqError(f"--concurrency wants positive integers like 1,4,16, got {spec!r}")
    return ns


def run_concurrency(args, model_dir) -> int:
    import torch

    from ..engine.sampling import SamplingParams
    from ..tts import TTS
    from .concurrency import plot, run_round

    ns = _counts(args.concurrency)
    arrivals = ["together", "staggered"] if args.arrival == "both" else [args.arrival]
    tts = TTS.from_local(model_dir, device=args.device, dtype=args.dtype, flow_dtype=args.flow_dtype,
                         flow=flow_from_args(args), max_sessions=max(ns), **speculative_from_args(args))
    params = SamplingParams(max_new_tokens=args.tokens, ignore_eos=True) if args.tokens else SamplingParams()
    rounds = []
    try:
        for i in range(args.warmup):
            run_round(tts, 1, params=params, seed=args.seed + 1000 + i)
        for n in ns:
            for arrival in arrivals:
                modes = (False, True) if args.sequential else (False,)
                for sequential in modes:
                    r = run_round(tts, n, arrival=arrival, stagger_s=args.stagger, params=params, seed=args.seed,
                                  sequential=sequential, label="scheduler")
                    rounds.append(r)
                    print(f"N={n:3d} {arrival:9} {r['mode']:17} TTFA p50 {r.get('ttfa_p50_ms', 0):8.0f} ms "
                          f"p95 {r.get('ttfa_p95_ms', 0):8.0f} ms  RTF {r.get('rtf_median', 0):5.2f}  "
                          f"underrun streams {r.get('streams_with_underruns', 0)}  "
                          f"tok/s {r.get('tokens_per_s_per_stream', 0):6.1f}/stream "
                          f"{r.get('tokens_per_s_aggregate', 0):7.1f} total  errors {len(r['errors'])}", flush=True)
    finally:
        tts.close()
    result = {"when": dt.datetime.now().isoformat(timespec="seconds"), "device": args.device,
              "dtype": args.dtype or "file", "flow_dtype": args.flow_dtype or "fp32", "flow": tts.flow.label,
              "tokens": args.tokens,
              "scheduler": True, "threads": torch.get_num_threads(), "machine": platform.machine(),
              "model_dir": str(model_dir), "rounds": rounds}
    if args.plot and not plot(rounds, args.plot):
        print("matplotlib is not installed: no plot (pip install 'nutq[bench]')")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=1))
    return 0


def _print(result: dict) -> None:
    m = result["median"]
    print(f"\nmedians over {len(result['trials'])} trials ({result['device']}, {result['threads']} threads):")
    for k in SHOWN:
        if m.get(k) is not None:
            print(f"  {k:24} {m[k]:10.2f}")
    if "official" in result:
        o, r = result["official"]["median"], result["ratios"]
        print(f"  official generate()       {o['generate_s']:10.2f} s  (T3 {o['t3_tokens_per_s']:.1f} tok/s)")
        print(f"  TTFA speed-up vs official generate(): {r['ttfa_speedup']:.1f}x; "
              f"T3 tokens/s ratio: {r['t3_tokens_per_s_ratio']:.2f}x")
    if "speculative" in result:
        sp = result["speculative"]
        print(f"  speculative ({sp['draft']}): acceptance {sp['acceptance_rate']:.2f}, "
              f"{sp['tokens_per_forward']:.2f} tokens per target forward over {sp['rounds']} rounds")
