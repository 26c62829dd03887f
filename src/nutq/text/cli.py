"""`nutq normalize "TEXT" [--lang ar] [--diacritize] [--json] [--vocab PATH]`.

Prints the spoken text, or the whole result as JSON. `nutq.cli` registers it with `add_parser`.
"""

from __future__ import annotations

import argparse
import json
import sys

from nutq.text.diacritize import DiacritizerUnavailable
from nutq.text.frontend import SUPPORTED_LANGS, TextFrontend
from nutq.text.vocab import load_vocab_charset


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("normalize", help="show how the Arabic frontend reads a text")
    p.add_argument("text", help="text to normalise; '-' reads standard input")
    p.add_argument("--lang", default="ar", choices=SUPPORTED_LANGS)
    p.add_argument("--diacritize", action="store_true", help="add harakat (needs text2tashkeel)")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--vocab", metavar="PATH", help="tokenizer JSON; map characters it cannot encode")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    vocab = load_vocab_charset(args.vocab) if getattr(args, "vocab", None) else None
    try:
        result = TextFrontend(vocab=vocab)(text, args.lang, diacritize=args.diacritize)
    except DiacritizerUnavailable as e:
        print(f"nutq normalize: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    else:
        print(result.text)
    return 0
