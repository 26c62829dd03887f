"""`nutq data validate`: check every clip of a manifest and summarise the corpus.

Each file gets the checks below; an *error* excludes it from training (`prepare` skips it for the
same reason), a *warning* is a quality problem worth fixing (`--fail-on CHECK` makes one an error).

errors:   manifest, missing, decode, truncated, sample_rate (< 16 kHz), duration (outside the
          bounds), silent, transcript (empty after normalization), unencodable (characters the MTL
          tokenizer cannot encode), language, duplicate (same decoded audio as an earlier clip),
          lone_speaker (no other usable clip of the speaker to serve as its reference)
warnings: clipping, snr (< 20 dB), edge_silence (long leading/trailing silence), silence_ratio,
          unusual_rate (not 16/22.05/24/44.1/48 kHz), mixed_down (several channels averaged)
"""

from __future__ import annotations

from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .audio_checks import DecodeError, decode, measure
from .manifest import ManifestProblem, Utterance

__all__ = ["Thresholds", "FileResult", "check_audio", "validate", "ERROR_CHECKS", "WARNING_CHECKS"]

ERROR_CHECKS = ("manifest", "missing", "decode", "truncated", "sample_rate", "duration", "silent", "transcript",
                "unencodable", "language", "duplicate", "lone_speaker")
WARNING_CHECKS = ("clipping", "snr", "edge_silence", "silence_ratio", "unusual_rate", "mixed_down")


@dataclass(frozen=True)
class Thresholds:
    min_sample_rate: int = 16_000
    usual_sample_rates: tuple[int, ...] = (16_000, 22_050, 24_000, 44_100, 48_000)
    min_seconds: float = 1.0
    max_seconds: float = 30.0
    max_clip_ratio: float = 0.001
    max_edge_silence_s: float = 1.0
    max_silence_ratio: float = 0.5
    min_snr_db: float = 20.0
    min_speaker_seconds: float = 60.0  # less: reported as a speaker with too little data
    max_error_ratio: float = 0.05  # share of files with errors above which the run fails
    fail_on: frozenset[str] = frozenset()  # warning checks treated as errors
    targets: tuple[tuple[str, float], ...] = ()  # (dialect, hours) the corpus should reach

    def __post_init__(self):
        unknown = set(self.fail_on) - set(WARNING_CHECKS)
        if unknown:
            raise ValueError(f"--fail-on takes warning checks ({', '.join(WARNING_CHECKS)}), not {', '.join(sorted(unknown))}")


@dataclass
class FileResult:
    id: str
    audio: str
    speaker: str
    dialect: str
    gender: str | None
    seconds: float = 0.0
    sample_rate: int | None = None
    measures: dict = field(default_factory=dict)
    issues: list[tuple[str, str]] = field(default_factory=list)  # (check, detail)
    pcm_sha256: str | None = None
    text: str = ""  # normalized, as T3 reads it

    def errors(self, th: Thresholds) -> list[tuple[str, str]]:
        return [(c, d) for c, d in self.issues if c in ERROR_CHECKS or c in th.fail_on]

    def warnings(self, th: Thresholds) -> list[tuple[str, str]]:
        return [(c, d) for c, d in self.issues if c in WARNING_CHECKS and c not in th.fail_on]


def check_audio(path: Path, th: Thresholds):
    """(Decoded or None, measures dict, issues) for one file; never raises for a bad file."""
    try:
        dec = decode(path)
    except DecodeError as e:
        return None, {}, [(e.kind, str(e))]
    except Exception as e:  # noqa: BLE001 - the run goes on whatever one file does
        return None, {}, [("decode", f"{type(e).__name__}: {e}")]
    m = measure(dec.wav, dec.sr)
    issues = []
    if dec.sr < th.min_sample_rate:
        issues.append(("sample_rate", f"{dec.sr} Hz is below {th.min_sample_rate} Hz"))
    elif dec.sr not in th.usual_sample_rates:
        issues.append(("unusual_rate", f"{dec.sr} Hz (expected one of {', '.join(map(str, th.usual_sample_rates))})"))
    if dec.channels > 1:
        issues.append(("mixed_down", f"{dec.channels} channels averaged to mono"))
    if not th.min_seconds <= m.seconds <= th.max_seconds:
        issues.append(("duration", f"{m.seconds:.2f} s is outside {th.min_seconds:g}-{th.max_seconds:g} s"))
    if m.silent:
        issues.append(("silent", f"no frame above {-55} dBFS (peak {m.peak:.2g})"))
    else:
        if m.clip_ratio > th.max_clip_ratio:
            issues.append(("clipping", f"{100 * m.clip_ratio:.2f}% of samples at full scale"))
        if m.snr_db < th.min_snr_db:
            issues.append(("snr", f"estimated SNR {m.snr_db:.1f} dB is below {th.min_snr_db:g} dB"))
        edge = max(m.lead_silence_s, m.trail_silence_s)
        if edge > th.max_edge_silence_s:
            issues.append(("edge_silence", f"{m.lead_silence_s:.2f} s leading / {m.trail_silence_s:.2f} s trailing"))
        if m.silence_ratio > th.max_silence_ratio:
            issues.append(("silence_ratio", f"{100 * m.silence_ratio:.0f}% of the clip is silence"))
    return dec, asdict(m), issues


def _audio_job(args):
    path, th = args
    dec, measures, issues = check_audio(path, th)
    return (None if dec is None else (dec.sr, dec.pcm_sha256)), measures, issues


def check_files(utterances: list[Utterance], th: Thresholds, text_reader, *, workers: int = 1,
                progress: bool = True) -> list[FileResult]:
    """Per-file results in manifest order (audio checks in `workers` processes)."""
    from tqdm import tqdm

    jobs = [(u.audio, th) for u in utterances]
    bar = dict(total=len(jobs), desc="validate", unit="file", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            audio = list(tqdm(pool.map(_audio_job, jobs, chunksize=8), **bar))
    else:
        audio = [_audio_job(j) for j in tqdm(jobs, **bar)]
    results, first_of = [], {}
    for u, (dec, measures, issues) in zip(utterances, audio):
        r = FileResult(u.id, str(u.audio), u.speaker, u.dialect, u.gender, measures=measures, issues=list(issues))
        if dec is not None:
            r.sample_rate, r.pcm_sha256 = dec
            r.seconds = measures["seconds"]
            earlier = first_of.setdefault(r.pcm_sha256, u.id)
            if earlier != u.id:
                r.issues.append(("duplicate", f"same audio as {earlier}"))
        try:
            read = text_reader(u.text, u.language)
        except ValueError as e:  # an unsupported language tag
            r.issues.append(("language", str(e)))
        else:
            r.text = read.text
            if not read.text:
                r.issues.append(("transcript", "empty transcript" if not u.text.strip() else
                                 "transcript is empty after normalization"))
            elif read.unknown:
                shown = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in read.unknown[:8])
                r.issues.append(("unencodable", f"{len(read.unknown)} character(s) the tokenizer cannot encode: {shown}"))
        results.append(r)
    _mark_lone_speakers(results, th)
    return results


def _mark_lone_speakers(results: list[FileResult], th: Thresholds) -> None:
    usable = Counter(r.speaker for r in results if not r.errors(th))
    for r in results:
        if not r.errors(th) and usable[r.speaker] < 2:
            r.issues.append(("lone_speaker", f"speaker {r.speaker!r} has no other usable clip to serve as the reference"))


def validate(utterances: list[Utterance], problems: list[ManifestProblem], th: Thresholds, text_reader, *,
             workers: int = 1, progress: bool = True) -> dict:
    """The JSON report (see `report.render_table` for the readable view)."""
    results = check_files(utterances, th, text_reader, workers=workers, progress=progress)
    return build_report(results, problems, th)


def build_report(results: list[FileResult], problems: list[ManifestProblem], th: Thresholds) -> dict:
    good = [r for r in results if not r.errors(th)]
    cells: dict = defaultdict(lambda: {"seconds": 0.0, "utterances": 0, "speakers": set()})
    spk_seconds: Counter = Counter()
    for r in good:
        for key in ((r.dialect, r.gender or "unknown"), (r.dialect, "all")):
            c = cells[key]
            c["seconds"] += r.seconds
            c["utterances"] += 1
            c["speakers"].add(r.speaker)
        spk_seconds[(r.speaker, r.dialect)] += r.seconds
    corpus = defaultdict(dict)
    for (dialect, gender), c in sorted(cells.items()):
        corpus[dialect][gender] = {"hours": c["seconds"] / 3600, "utterances": c["utterances"],
                                   "speakers": len(c["speakers"])}
    total_h = sum(v["all"]["hours"] for v in corpus.values())
    balance = {}
    targets = dict(th.targets)
    for dialect in sorted(set(corpus) | set(targets)):
        have = corpus.get(dialect, {}).get("all", {}).get("hours", 0.0)
        female = corpus.get(dialect, {}).get("female", {}).get("hours", 0.0)
        balance[dialect] = {"hours": have, "share": have / total_h if total_h else 0.0,
                            "female_share": female / have if have else None,
                            "target_hours": targets.get(dialect), "met": have >= targets[dialect] if dialect in targets else None}
    failures: dict = defaultdict(list)
    for p in problems:
        failures["manifest"].append({"line": p.line, "audio": p.audio, "detail": p.reason})
    for r in results:
        for check, detail in r.issues:
            failures[check].append({"id": r.id, "audio": r.audio, "detail": detail})
    n_files = len(results) + len(problems)
    n_bad = len(problems) + sum(1 for r in results if r.errors(th))
    low = sorted([{"speaker": s, "dialect": d, "seconds": v} for (s, d), v in spk_seconds.items()
                  if v < th.min_speaker_seconds], key=lambda x: (x["seconds"], x["speaker"]))
    reasons = []
    if n_files and n_bad / n_files > th.max_error_ratio:
        reasons.append(f"{n_bad} of {n_files} files have errors ({100 * n_bad / n_files:.1f}% > "
                       f"{100 * th.max_error_ratio:g}%)")
    reasons += [f"{d}: {b['hours']:.2f} h of the {b['target_hours']:g} h target" for d, b in balance.items()
                if b["met"] is False]
    if not good:
        reasons.append("no usable file")
    return {
        "files": n_files, "usable": len(good), "with_errors": n_bad,
        "with_warnings": sum(1 for r in good if r.warnings(th)),
        "hours": total_h, "corpus": dict(corpus), "balance": balance, "low_data_speakers": low,
        "failures": {k: failures[k] for k in ERROR_CHECKS + WARNING_CHECKS if failures.get(k)},
        "severity": {k: ("error" if k in ERROR_CHECKS or k in th.fail_on else "warning")
                     for k in ERROR_CHECKS + WARNING_CHECKS},
        "thresholds": {k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in asdict(th).items()},
        "passed": not reasons, "fail_reasons": reasons,
        "results": [_result_json(r, th) for r in results],
    }


def _result_json(r: FileResult, th: Thresholds) -> dict:
    return {"id": r.id, "audio": r.audio, "speaker": r.speaker, "dialect": r.dialect, "gender": r.gender,
            "seconds": round(r.seconds, 3), "sample_rate": r.sample_rate, "text": r.text,
            "errors": [c for c, _ in r.errors(th)], "warnings": [c for c, _ in r.warnings(th)],
            "measures": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.measures.items()}}
