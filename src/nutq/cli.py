"""The `nutq` command. Subcommands import their machinery lazily so `nutq --help` is instant."""

from __future__ import annotations

import argparse
import sys

from .cli_args import add_flow_arguments, flow_from_args


def _make_checkpoint(args) -> int:
    from .checkpoints.make import make_checkpoint

    files = make_checkpoint(args.dir, size=args.size, seed=args.seed, overwrite=args.force, meanflow=args.meanflow)
    print(files.root)
    return 0


def _download(args) -> int:
    files = _resolve(args, args.flow)
    print(files.root)
    if args.flow == "meanflow":
        print(files.meanflow)
    return 0


def _speak(args) -> int:
    import soundfile as sf

    from .tts import SAMPLE_RATE, TTS

    flow = flow_from_args(args)
    tts = TTS(_resolve(args, flow.kind), device=args.device, dtype=args.dtype, flow_dtype=args.flow_dtype, flow=flow)
    wav = tts.synthesize(args.text, language=args.lang, voice=args.voice, seed=args.seed,
                         exaggeration=args.exaggeration, cfg_weight=args.cfg_weight, temperature=args.temperature,
                         normalize=not args.no_normalize, max_new_tokens=args.max_tokens,
                         watermark=False if args.no_watermark else None)
    sf.write(args.output, wav, SAMPLE_RATE, subtype="PCM_16")
    print(f"{args.output}: {len(wav) / SAMPLE_RATE:.2f} s at {SAMPLE_RATE} Hz")
    return 0


def _resolve(args, flow: str = "cfm"):
    from .checkpoints.files import resolve

    return resolve(args.model_dir, revision=getattr(args, "revision", None), flow=flow,
                   meanflow_revision=getattr(args, "meanflow_revision", None))


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nutq", description="Real-time Arabic text-to-speech (Chatterbox Multilingual).")
    ap.add_argument("--version", action="version", version=_version())
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("make-checkpoint", help="write random weights in the official file layout")
    p.add_argument("dir", help="output directory")
    p.add_argument("--size", choices=["tiny", "full"], default="tiny",
                   help="tiny: small widths for tests; full: official sizes for benchmarks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--meanflow", action="store_true",
                   help="also write a random distilled decoder (s3gen_meanflow.safetensors) for --flow meanflow")
    p.set_defaults(func=_make_checkpoint)

    p = sub.add_parser("download", help="fetch (or verify) the official model files and print their directory")
    p.add_argument("--model-dir", help="use this directory instead of downloading (also $NUTQ_MODEL_DIR)")
    p.add_argument("--revision", help="model repository revision (branch, tag or commit); also $NUTQ_MODEL_REVISION")
    p.add_argument("--flow", choices=["cfm", "meanflow"], default="cfm",
                   help="meanflow: also fetch the distilled decoder s3gen_meanflow.safetensors from "
                        "ResembleAI/chatterbox-turbo (only that file) and print its path")
    p.add_argument("--meanflow-revision",
                   help="Turbo repository revision for the meanflow file; also $NUTQ_MEANFLOW_REVISION")
    p.set_defaults(func=_download)

    p = sub.add_parser("speak", help="synthesise text to a WAV file (offline)")
    p.add_argument("text")
    p.add_argument("-o", "--output", default="out.wav")
    p.add_argument("--model-dir", help="checkpoint directory (also $NUTQ_MODEL_DIR); default: download")
    p.add_argument("--revision", help="model repository revision when downloading")
    p.add_argument("--voice", help="reference clip (wav/flac/ogg) to clone; default: the built-in voice")
    p.add_argument("--lang", default="ar")
    p.add_argument("--seed", type=int)
    p.add_argument("--exaggeration", type=float, default=0.5)
    p.add_argument("--cfg-weight", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--max-tokens", type=int, default=1000, help="speech-token limit (25 per second)")
    p.add_argument("--no-normalize", action="store_true", help="skip the Arabic text frontend")
    p.add_argument("--no-watermark", action="store_true",
                   help="skip the Perth watermark (applied by default when resemble-perth is installed)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="T3 weights dtype (default: file's)")
    add_flow_arguments(p)
    p.set_defaults(func=_speak)

    for mod in _OPTIONAL_SUBCOMMANDS:
        try:
            module = __import__(mod, fromlist=["add_parser"])
        except ImportError:
            continue
        module.add_parser(sub)
    return ap


# Subcommands that live beside the packages they drive (each exposes add_parser(subparsers)).
_OPTIONAL_SUBCOMMANDS = ("nutq.text.cli", "nutq.bench.cli", "nutq.serve.cli", "nutq.train.data.cli",
                         "nutq.train.cli")


def _version() -> str:
    from . import __version__

    return f"nutq {__version__}"


def main(argv: list[str] | None = None) -> int:
    from .errors import NutqError

    ap = build_parser()
    args = ap.parse_args(argv)
    if not getattr(args, "func", None):
        ap.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (NutqError, FileExistsError, ValueError) as e:
        print(f"nutq: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
