"""Latin script inside Arabic text: acronyms and units read in Arabic, everything else kept.

The model is multilingual, so Latin words stay as they are (the tokenizer lowercases them). Two
kinds of Latin tokens are read the way an Arabic speaker says them instead:

* lexicon entries (AI → إيه آي, km → كيلومتر, km/h → كيلومتر في الساعة …);
* other all-capital acronyms of 2–5 letters *isolated among Arabic words* are spelled with the
  Arabic names of the letters (IBM → آي بي إم). Inside an English run (two or more Latin words
  together) they are left alone, since the engine may synthesise that run in English.

`latin_runs` finds maximal runs of Latin words in the spoken text; the engine uses their length to
decide whether to switch the synthesis language for a run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nutq.text.align import Aligned

LEXICON: dict[str, str] = {
    "AI": "إيه آي", "CEO": "سي إي أو", "USA": "يو إس إيه", "US": "يو إس", "UK": "يو كيه",
    "UAE": "يو إيه إي", "UN": "يو إن", "EU": "إي يو", "NASA": "ناسا", "FIFA": "فيفا",
    "UNESCO": "يونسكو", "OPEC": "أوبك", "NATO": "ناتو", "GPT": "جي بي تي", "ChatGPT": "تشات جي بي تي",
    "PDF": "بي دي إف", "USB": "يو إس بي", "GPS": "جي بي إس", "SMS": "إس إم إس", "ID": "آي دي",
    "IT": "آي تي", "PhD": "دكتوراه", "CV": "سي في", "OK": "أوكيه", "TV": "تي في", "DNA": "دي إن إيه",
    "IBM": "آي بي إم", "BBC": "بي بي سي", "CNN": "سي إن إن", "API": "إيه بي آي", "URL": "يو آر إل",
    "Wi-Fi": "واي فاي", "WiFi": "واي فاي", "wifi": "واي فاي", "IoT": "آي أو تي", "VIP": "في آي بي", "COVID": "كوفيد", "Covid": "كوفيد",
    "km": "كيلومتر", "kg": "كيلوغرام", "cm": "سنتيمتر", "mm": "مليمتر", "km/h": "كيلومتر في الساعة",
    "GB": "جيجابايت", "MB": "ميجابايت", "TB": "تيرابايت", "KB": "كيلوبايت",
}

LETTER_NAMES: dict[str, str] = {
    "A": "إيه", "B": "بي", "C": "سي", "D": "دي", "E": "إي", "F": "إف", "G": "جي", "H": "إتش",
    "I": "آي", "J": "جيه", "K": "كيه", "L": "إل", "M": "إم", "N": "إن", "O": "أو", "P": "بي",
    "Q": "كيو", "R": "آر", "S": "إس", "T": "تي", "U": "يو", "V": "في", "W": "دبليو", "X": "إكس",
    "Y": "واي", "Z": "زد",
}

_LAT = r"A-Za-z\u00c0-\u024f"
# An Arabic clitic may be attached to the Latin token (الـCEO, وAI); it stays attached.
_TOKEN = re.compile(
    rf"(?:(?<![\w/])(?P<pre>وال|بال|لل|ال|[وبل]))?(?<![{_LAT}/])(?P<tok>[{_LAT}]+(?:[/\-][{_LAT}]+)?)(?![{_LAT}\w])"
)
_LATIN_WORD = rf"[{_LAT}]+(?:['’\-][{_LAT}]+)*"
_RUN = re.compile(rf"{_LATIN_WORD}(?:[\s,.;:!?'\"()\-]+{_LATIN_WORD})*")
_NEIGHBOUR = re.compile(rf"[{_LAT}]")


def _isolated(text: str, a: int, b: int) -> bool:
    """No other Latin word within the neighbouring word on either side."""
    left = text[max(0, a - 3):a].rstrip(" ,.")
    right = text[b:b + 3].lstrip(" ,.")
    return not (left and _NEIGHBOUR.match(left[-1])) and not (right and _NEIGHBOUR.match(right[0]))


def read_latin(buf: Aligned) -> Aligned:
    """Replace lexicon acronyms/units and isolated capital acronyms by their Arabic reading."""

    def fn(m: re.Match[str], text: str) -> str | None:
        tok, pre = m.group("tok"), m.group("pre") or ""
        if m.start("tok") > 0 and text[m.start("tok") - 1].isalnum() and not pre:
            return None  # glued to an Arabic word that is not a clitic
        if not _isolated(text, m.start("tok"), m.end()):
            return None
        if tok in LEXICON:
            return pre + LEXICON[tok]
        if 2 <= len(tok) <= 5 and tok.isascii() and tok.isalpha() and tok.isupper():
            return pre + " ".join(LETTER_NAMES[c] for c in tok)
        return None

    return buf.rewrite(_TOKEN, fn)


@dataclass(frozen=True, slots=True)
class LatinSpan:
    """A run of Latin-script words: [start, end) in the spoken text and in the original."""

    start: int
    end: int
    orig_start: int
    orig_end: int
    words: int
    text: str


def latin_runs(buf: Aligned) -> tuple[LatinSpan, ...]:
    spans = []
    for m in _RUN.finditer(buf.text):
        a, b = m.span()
        os_, oe = buf.span(a, b)
        spans.append(LatinSpan(a, b, os_, oe, len(re.findall(_LATIN_WORD, m.group())), m.group()))
    return tuple(spans)
