"""`nutq eval precision [--model-dir D] [--json OUT] [--markdown]`: deviation of each precision
from fp32 per component and language (see nutq.eval.precision)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _precision(args) -> int:
    from ..checkpoints.files import resolve
    from .precision import T3_PRECISIONS, VOCODER_PRECISIONS, default_output, markdown, measure

    files = resolve(args.model_dir, flow="cfm")
    res = measure(files, languages=tuple(args.lang.split(",")), steps=args.steps, seed=args.seed,
                  t3_precisions=tuple(args.t3.split(",")) if args.t3 else T3_PRECISIONS,
                  vocoder_precisions=() if args.no_vocoder else VOCODER_PRECISIONS,
                  log=lambda m: print(m, file=sys.stderr))
    out = Path(args.json) if args.json else default_output(files)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(markdown(res) if args.markdown else json.dumps(res, indent=1))
    print(f"written to {out}", file=sys.stderr)
    return 0


def add_eval_parser(sub) -> argparse.ArgumentParser:
    """`nutq eval precision` (the `eval` group is built by nutq.train.cli)."""
    q = sub.add_parser("precision", help="KL / top-1 / guard agreement of T3 and SNR of flow and HiFT vs fp32")
    q.add_argument("--model-dir", help="checkpoint directory (also $NUTQ_MODEL_DIR); default: download")
    q.add_argument("--lang", default="ar,en,fr", help="comma-separated languages (ar, en, fr have prompts)")
    q.add_argument("--t3", help="comma-separated T3 precisions (default: fp32,bf16,fp16,int8,int4)")
    q.add_argument("--no-vocoder", action="store_true", help="skip the flow and HiFT measurements")
    q.add_argument("--steps", type=int, default=200)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--json", help="output file (default: MODEL_DIR/precision.json, which TTS's guard reads)")
    q.add_argument("--markdown", action="store_true", help="print the tables for BENCHMARKS.md")
    q.set_defaults(func=_precision)
    return q
