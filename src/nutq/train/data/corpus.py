"""`nutq data corpus`: a stand-in Arabic speech corpus for tests and demos, with planted bad files.

No Arabic speech corpus is available offline, so speech is synthesized by `espeak-ng` (its Arabic
voice; Debian package `espeak-ng`): each "speaker" is one voice variant, pitch and speed, and
carries a dialect label, two speakers (a male and a female voice) per dialect. The audio is
espeak's MSA whatever the label: the labels exercise the per-dialect bookkeeping (splits,
reports), not pronunciation. Without espeak-ng, `engine="tones"` makes the same
layout from numpy signals (harmonic "syllables" with pauses at a per-speaker pitch).

Beside the good clips, planted bad files (listed in `planted.json` with the check that must flag
each): clipped, silent, 8 kHz, truncated, unencodable transcript, duplicate, too short, noisy,
long leading silence.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError
from .manifest import Utterance, write_manifest

__all__ = ["make_corpus", "espeak_available", "SENTENCES", "PLANTED"]

SENTENCES = (
    "مرحبا بكم في نطق.", "كيف حالك اليوم؟", "الطقس جميل في الصباح.", "شكرا جزيلا على مساعدتك.",
    "أين تقع المكتبة العامة؟", "نلتقي غدا في الساعة الثالثة.", "القهوة ساخنة جدا هذا الصباح.",
    "يدرس الطلاب في الجامعة كل يوم.", "هل يمكنك أن تعيد ما قلت؟", "وصل القطار إلى المحطة متأخرا.",
    "اشتريت كتابا جديدا من السوق.", "البحر هادئ والسماء صافية.", "سافرت العائلة إلى المدينة في العطلة.",
    "هذا المطعم يقدم طعاما لذيذا.", "الرجاء إغلاق الباب عند الخروج.", "بدأ الاجتماع في موعده تماما.",
    "عندي 3 أسئلة عن الدرس.", "يبلغ عدد سكان المدينة مليون نسمة.", "أحب القراءة قبل النوم.",
    "ستبدأ المباراة بعد قليل.", "تعلمت اللغة العربية منذ سنوات.", "الحديقة مليئة بالأزهار الملونة.",
    "اتصل بي عندما تصل إلى البيت.", "الامتحان سهل إن شاء الله.",
)
DIALECTS = ("msa", "egyptian", "gulf", "levantine", "maghrebi", "iraqi")


@dataclass(frozen=True)
class _Voice:
    name: str
    variant: str  # espeak voice (ar, ar+f2 …)
    pitch: int  # espeak 0-99
    speed: int  # words per minute
    gender: str
    f0: float  # pitch of the numpy stand-in


_VOICES = (
    _Voice("spk-m1", "ar", 35, 150, "male", 110.0), _Voice("spk-f1", "ar+f2", 60, 160, "female", 210.0),
    _Voice("spk-m2", "ar+m3", 50, 175, "male", 130.0), _Voice("spk-f2", "ar+f4", 75, 140, "female", 240.0),
    _Voice("spk-m3", "ar+m1", 25, 135, "male", 95.0), _Voice("spk-f3", "ar+f1", 85, 170, "female", 260.0),
)
# planted file -> the check that must flag it
PLANTED = {"bad-clipped": "clipping", "bad-silent": "silent", "bad-8khz": "sample_rate", "bad-truncated": "truncated",
           "bad-unencodable": "unencodable", "bad-duplicate": "duplicate", "bad-short": "duration", "bad-noisy": "snr",
           "bad-lead-silence": "edge_silence"}
UNENCODABLE_TEXT = "مرحبا 你好 世界"
EXTRA_SENTENCE = "هذه جملة إضافية للاختبار فقط."  # spoken by no good clip, so never a duplicate


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _espeak(text: str, v: _Voice) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "x.wav"
        try:
            subprocess.run(["espeak-ng", "-v", v.variant, "-p", str(v.pitch), "-s", str(v.speed), "-w", str(out), text],
                           check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            raise DataError(f"espeak-ng failed: {e}") from e
        wav, sr = sf.read(str(out), dtype="float32")
    return wav, sr


def _tones(text: str, v: _Voice, rng: np.random.Generator, sr: int = 22_050) -> tuple[np.ndarray, int]:
    """Harmonic syllables (one per two letters) at the speaker's pitch, with pauses at spaces."""
    parts = [np.zeros(int(0.15 * sr), np.float32)]
    t = np.arange(int(0.16 * sr)) / sr
    env = np.sin(np.pi * t / t[-1]) ** 2
    for word in text.split():
        for _ in range(max(1, len(word) // 2)):
            f0 = v.f0 * (1 + 0.08 * rng.standard_normal())
            syl = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * env
            parts.append((0.3 * syl).astype(np.float32))
        parts.append(np.zeros(int(0.08 * sr), np.float32))
    parts.append(np.zeros(int(0.2 * sr), np.float32))
    return np.concatenate(parts), sr


def make_corpus(out: str | Path, *, speakers: int = 6, per_speaker: int = 8, engine: str = "espeak",
                planted: bool = True, seed: int = 0) -> Path:
    """Write OUT/clips/*.wav, OUT/manifest.jsonl and (with `planted`) OUT/planted.json; returns the manifest."""
    import soundfile as sf

    from ...audio.resample import resample
    from ...text.frontend import TextFrontend

    if engine not in ("espeak", "tones"):
        raise DataError(f"engine must be 'espeak' or 'tones', not {engine!r}")
    if engine == "espeak" and not espeak_available():
        raise DataError("espeak-ng is not installed (apt-get install espeak-ng), or use --engine tones")
    if not 1 <= speakers <= len(_VOICES):
        raise DataError(f"speakers must be 1-{len(_VOICES)}")
    if per_speaker < 2:
        raise DataError("every speaker needs at least two clips (one is the other's reference)")
    out = Path(out)
    clips = out / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frontend = TextFrontend()
    utts, first = [], None

    def say(text: str, v: _Voice):
        # espeak reads the frontend's spelling (numbers as words), so audio and transcript agree
        spoken = frontend(text, "ar").text
        return _espeak(spoken, v) if engine == "espeak" else _tones(spoken, v, rng)

    def add(name, wav, sr, text, v, k, subtype="PCM_16"):
        path = clips / f"{name}.wav"
        sf.write(str(path), wav, sr, subtype=subtype)
        utts.append(Utterance(id=name, audio=path, text=text, speaker=v.name, dialect=DIALECTS[(k // 2) % len(DIALECTS)],
                              gender=v.gender))
        return path

    for k, v in enumerate(_VOICES[:speakers]):
        for j in range(per_speaker):
            text = SENTENCES[(k * per_speaker + j) % len(SENTENCES)]
            wav, sr = say(text, v)
            add(f"{v.name}-{j:03d}", wav, sr, text, v, k)
            first = first or (wav, sr, text, v, k)
    if planted:
        wav, sr, text, v, k = first
        peak = float(np.abs(wav).max()) or 1.0
        add("bad-clipped", np.clip(wav / peak * 6.0, -1.0, 1.0), sr, text, v, k)
        add("bad-silent", np.zeros(2 * sr, np.float32), sr, text, v, k)
        add("bad-8khz", resample(wav, sr, 8000), 8000, text, v, k)
        add("bad-unencodable", say(EXTRA_SENTENCE, v)[0], sr, UNENCODABLE_TEXT, v, k)
        shutil.copyfile(clips / utts[0].audio.name, clips / "bad-duplicate.wav")
        utts.append(Utterance(id="bad-duplicate", audio=clips / "bad-duplicate.wav", text=text, speaker=v.name,
                              dialect=utts[0].dialect, gender=v.gender))
        add("bad-short", wav[: int(0.5 * sr)], sr, text, v, k)
        noise = rng.standard_normal(len(wav)).astype(np.float32)
        add("bad-noisy", 0.5 * wav / peak + noise * (0.5 * float(np.sqrt(np.mean((wav / peak) ** 2))) / 10 ** 0.25), sr,
            text, v, k)
        add("bad-lead-silence", np.concatenate([np.zeros(2 * sr, np.float32), wav]), sr, text, v, k)
        path = add("bad-truncated", wav, sr, text, v, k)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        (out / "planted.json").write_text(json.dumps(PLANTED, indent=1))
    return write_manifest(out / "manifest.jsonl", utts)
