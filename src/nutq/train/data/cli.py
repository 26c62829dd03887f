"""`nutq data validate|prepare|corpus|import`: the dataset tools (`nutq.cli` registers them lazily)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import DataError
from .validate import WARNING_CHECKS, Thresholds

__all__ = ["add_parser"]


def _target(s: str) -> tuple[str, float]:
    from .manifest import normalize_dialect

    name, sep, hours = s.partition("=")
    try:
        if not sep:
            raise ValueError
        return normalize_dialect(name), float(hours)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DIALECT=HOURS (e.g. gulf=10), got {s!r}") from None


def _threshold_args(p) -> None:
    d = Thresholds()
    g = p.add_argument_group("checks")
    g.add_argument("--min-seconds", type=float, default=d.min_seconds)
    g.add_argument("--max-seconds", type=float, default=d.max_seconds)
    g.add_argument("--min-sample-rate", type=int, default=d.min_sample_rate)
    g.add_argument("--max-clip-ratio", type=float, default=d.max_clip_ratio, help="share of samples at full scale")
    g.add_argument("--max-edge-silence", type=float, default=d.max_edge_silence_s, help="seconds, leading or trailing")
    g.add_argument("--max-silence-ratio", type=float, default=d.max_silence_ratio)
    g.add_argument("--min-snr", type=float, default=d.min_snr_db, help="dB (estimated)")
    g.add_argument("--min-speaker-seconds", type=float, default=d.min_speaker_seconds)
    g.add_argument("--max-error-ratio", type=float, default=d.max_error_ratio,
                   help="fail when more files than this share have errors")
    g.add_argument("--fail-on", action="append", default=[], choices=WARNING_CHECKS, metavar="CHECK",
                   help=f"treat a warning check as an error (repeatable: {', '.join(WARNING_CHECKS)})")
    g.add_argument("--target", action="append", default=[], type=_target, metavar="DIALECT=HOURS",
                   help="hours a dialect should reach (repeatable); unmet targets fail validation")


def _thresholds(a) -> Thresholds:
    return Thresholds(min_sample_rate=a.min_sample_rate, min_seconds=a.min_seconds, max_seconds=a.max_seconds,
                      max_clip_ratio=a.max_clip_ratio, max_edge_silence_s=a.max_edge_silence,
                      max_silence_ratio=a.max_silence_ratio, min_snr_db=a.min_snr,
                      min_speaker_seconds=a.min_speaker_seconds, max_error_ratio=a.max_error_ratio,
                      fail_on=frozenset(a.fail_on), targets=tuple(a.target))


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("data", help="speech datasets: validate, prepare for training, import, stand-in corpus")
    sub = p.add_subparsers(dest="data_command", metavar="COMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    v = sub.add_parser("validate", help="check every clip of a manifest and report on the corpus")
    v.add_argument("manifest")
    v.add_argument("--report", metavar="JSON", help="JSON report path (default: MANIFEST.validation.json beside it)")
    v.add_argument("--model-dir", help="checkpoint whose tokenizer judges transcripts (default: the bundled one)")
    v.add_argument("--workers", type=int, default=1, help="processes decoding audio")
    v.add_argument("--quiet", action="store_true", help="no progress bar")
    _threshold_args(v)
    v.set_defaults(func=_validate)

    r = sub.add_parser("prepare", help="tokens and conditioning per utterance, as shards for training")
    r.add_argument("manifest")
    r.add_argument("--model-dir", required=True, help="the checkpoint to prepare for")
    r.add_argument("--out", required=True, help="output directory (an existing one is resumed)")
    r.add_argument("--val-fraction", type=float, default=0.1, help="share of each dialect's audio for validation")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--shard-size", type=int, default=256)
    r.add_argument("--batch-size", type=int, default=16, help="utterances per S3 tokenizer call")
    r.add_argument("--device", default="cpu")
    r.add_argument("--workers", type=int, default=1, help="processes, each computing whole shards")
    r.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    r.add_argument("--force", action="store_true", help="replace an output prepared with other inputs")
    r.add_argument("--quiet", action="store_true")
    _threshold_args(r)
    r.set_defaults(func=_prepare)

    c = sub.add_parser("corpus", help="generate a stand-in Arabic corpus (espeak-ng) with planted bad files")
    c.add_argument("out")
    c.add_argument("--speakers", type=int, default=6)
    c.add_argument("--per-speaker", type=int, default=8)
    c.add_argument("--engine", choices=["espeak", "tones"], default="espeak")
    c.add_argument("--no-planted", action="store_true", help="good clips only")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=_corpus)

    i = sub.add_parser("import", help="write a manifest from a Common Voice or audiofolder directory")
    i.add_argument("layout", choices=["commonvoice", "audiofolder"])
    i.add_argument("source")
    i.add_argument("--out", required=True, help="manifest to write (JSONL)")
    i.add_argument("--tsv", action="append", help="Common Voice TSV files (repeatable; default validated.tsv)")
    i.add_argument("--dialect", default="msa", help="label for clips that name no known dialect")
    i.set_defaults(func=_import)
    return p


def _validate(a) -> int:
    from .manifest import read_manifest
    from .report import render_table
    from .text import TextReader
    from .validate import validate

    th = _thresholds(a)
    if a.model_dir:
        from ...checkpoints import files as ckfiles

        tokenizer = ckfiles.resolve(a.model_dir).tokenizer
    else:
        from importlib import resources

        tokenizer = Path(str(resources.files("nutq") / "assets" / "grapheme_mtl_merged_expanded_v1.json"))
    utts, problems = read_manifest(a.manifest)
    report = validate(utts, problems, th, TextReader(tokenizer), workers=a.workers, progress=not a.quiet)
    path = Path(a.report) if a.report else Path(a.manifest).with_suffix(".validation.json")
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    print(render_table(report))
    print(f"JSON report: {path}")
    return 0 if report["passed"] else 1


def _prepare(a) -> int:
    from .prepare import PrepareSettings, prepare

    settings = PrepareSettings(val_fraction=a.val_fraction, seed=a.seed, shard_size=a.shard_size,
                               batch_size=a.batch_size, device=a.device, thresholds=_thresholds(a))
    meta = prepare(a.manifest, a.model_dir, a.out, settings, workers=a.workers, threads=a.threads, force=a.force,
                   progress=not a.quiet)
    for split, s in meta["splits"].items():
        print(f"{split}: {s['count']} utterances, {len(s['speakers'])} speakers, {s['seconds'] / 3600:.2f} h, "
              f"{len(s['shards'])} shards")
    if meta["skipped"]:
        print(f"skipped {len(meta['skipped'])} files (reasons in {Path(a.out) / 'prepared.json'})")
    for w in meta["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    return 0


def _corpus(a) -> int:
    from .corpus import make_corpus

    path = make_corpus(a.out, speakers=a.speakers, per_speaker=a.per_speaker, engine=a.engine,
                       planted=not a.no_planted, seed=a.seed)
    print(path)
    return 0


def _import(a) -> int:
    from .importers import import_audiofolder, import_common_voice
    from .manifest import write_manifest

    if a.layout == "commonvoice":
        utts, problems = import_common_voice(a.source, tuple(a.tsv or ("validated.tsv",)), a.dialect)
    else:
        if a.tsv:
            raise DataError("--tsv is for the commonvoice layout")
        utts, problems = import_audiofolder(a.source, a.dialect)
    write_manifest(a.out, utts)
    for p in problems[:20]:
        print(f"skipped line {p.line}: {p.reason}", file=sys.stderr)
    print(f"{a.out}: {len(utts)} utterances" + (f", {len(problems)} rows skipped" if problems else ""))
    return 0
