"""Normalisation for speech (not for search): what to drop, what to map, what to keep.

Kept as written, because folding them changes what is said: hamza forms (أ إ ؤ ئ ء), alef
madda and wasla, taa marbuta vs haa, alef maqsura vs yaa, and every haraka the input has.
Dropped: tatweel, bidi and other format characters (RLM, LRM, ALM, ZWJ, ZWNJ, BOM, soft hyphen),
emoji and pictographs with their modifiers, control characters, markdown and HTML decoration.
Mapped: Arabic-Indic and Persian digits to ASCII (for the number reader), presentation forms to
letters, Persian/Urdu letter forms inside Arabic words (ی ک ھ) to the Arabic letters they stand
for, punctuation to the marks the model and the pipeline expect (see `punctuate`).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from nutq.text import numbers
from nutq.text.align import Aligned

_DIGITS = {ord(c): str(i) for i, c in enumerate("٠١٢٣٤٥٦٧٨٩")} | {ord(c): str(i) for i, c in enumerate("۰۱۲۳۴۵۶۷۸۹")}
# Symbols (category So/Sk) that carry meaning for the number reader or markdown and must survive.
_KEEP_SYMBOLS = frozenset("°℃`")


@dataclass(slots=True)
class Tally:
    """Characters the frontend removed or replaced, by character (reported in the result)."""

    dropped: Counter[str] = field(default_factory=Counter)
    mapped: Counter[str] = field(default_factory=Counter)


def _char_action(ch: str) -> tuple[str | None, str]:
    """(replacement or None to keep, kind) where kind is "", "drop" or "map" (for the tally)."""
    o = ord(ch)
    if o < 0x80:
        if ch == "\t":
            return " ", ""
        if ch == "\r":
            return "\n", ""
        if o < 0x20 and ch != "\n" or o == 0x7F:
            return "", "drop"
        return None, ""
    if o in _DIGITS:
        return _DIGITS[o], ""
    if o == 0x0640:  # tatweel: typographic stretching, no sound
        return "", "drop"
    if 0xFE00 <= o <= 0xFE0F or 0xE0100 <= o <= 0xE01EF or o == 0x20E3:  # variation selectors, keycap
        return "", "drop"
    if o in (0x2028, 0x2029, 0x0085):
        return "\n", ""
    if 0x2190 <= o <= 0x21FF:  # arrows: decoration in LLM output
        return "", "drop"
    if (0xFB50 <= o <= 0xFDFF and o != 0xFDFC) or 0xFE70 <= o <= 0xFEFC or 0xFF01 <= o <= 0xFF5E:
        # Presentation forms and full-width ASCII: the same letters in another encoding.
        rep = unicodedata.normalize("NFKC", ch)
        return (rep, "map") if rep != ch else (None, "")
    cat = unicodedata.category(ch)
    if cat == "Zs":
        return " ", ""
    if cat in ("Cf", "Cc", "Cs", "Co", "Cn"):
        return "", "drop"
    if cat in ("So", "Sk") and ch not in _KEEP_SYMBOLS:
        return "", "drop"
    return None, ""


def clean_chars(buf: Aligned, tally: Tally) -> Aligned:
    """Character-level clean-up (see module docstring)."""

    def fn(_i: int, ch: str) -> str | None:
        rep, kind = _char_action(ch)
        if kind == "drop":
            tally.dropped[ch] += 1
        elif kind == "map":
            tally.mapped[ch] += 1
        return rep

    return buf.map_chars(fn)


# -- Persian / Urdu letter forms ------------------------------------------------------------------

_PERSIAN_WORD = re.compile(r"[\w\u064b-\u065f\u0670]*[\u06cc\u06a9\u06be\u06c1\u06c0\u06d5][\w\u064b-\u065f\u0670]*")
_PERSIAN_ONLY = frozenset("پچژگ")  # a word with these is Persian/Urdu (or a dialect loan): leave it
_PERSIAN_MAP = str.maketrans({"ک": "ك", "ھ": "ه", "ہ": "ه", "ۀ": "ة", "ە": "ه"})
# Words whose final Persian ی stands for alef maqsura, not yaa (final ی is ambiguous in Persian
# typing; yaa is the common case, these frequent function words are the exceptions).
_MAQSURA_WORDS = frozenset({"علی", "إلی", "الی", "حتی", "متی", "لدی", "سوی", "مدی", "أدی", "مستوی", "معنی", "مصطفی", "موسی", "عیسی", "یحیی", "أخری", "کبری", "أولی"})


def fix_persian_letters(buf: Aligned, tally: Tally) -> Aligned:
    """Map ی ک ھ ہ ۀ ە to Arabic letters inside words that are otherwise Arabic (typing typos)."""

    def fn(m: re.Match[str], _text: str) -> str | None:
        w = m.group()
        if _PERSIAN_ONLY.intersection(w):
            return None
        final_maqsura = w in _MAQSURA_WORDS
        out = w.translate(_PERSIAN_MAP)
        if "ی" in out:
            end = "ى" if final_maqsura else "ي"
            out = out[:-1].replace("ی", "ي") + (end if out[-1] == "ی" else out[-1])
        for a, b in zip(w, out):
            if a != b:
                tally.mapped[a] += 1
        return out

    return buf.rewrite(_PERSIAN_WORD, fn)


# -- abbreviations -----------------------------------------------------------------------------------

# Title and address abbreviations read in full; only before an Arabic word (a name), so a
# sentence-final "م." or a lone letter elsewhere is left alone.
_ABBREVIATIONS = {"أ.د": "الأستاذ الدكتور", "د": "الدكتور", "أ": "الأستاذ", "م": "المهندس", "ص.ب": "صندوق بريد"}
_ABBREV = re.compile(r"(?<![\w.])(?:(ص\.ب)\.?[ ]?(?=\d)|(أ\.د|د|أ|م)\. (?=[\u0621-\u064a]))")


def expand_abbreviations(buf: Aligned) -> Aligned:
    """د. أحمد → الدكتور أحمد، ص.ب 123 → صندوق بريد 123 ("د.أحمد" without a space is left:
    too close to initials and domain names)."""
    return buf.rewrite(_ABBREV, lambda m, _t: _ABBREVIATIONS[m.group(1) or m.group(2)] + " ")


# -- digits ------------------------------------------------------------------------------------------

_DIGIT_SEPARATORS = re.compile(r"(?<=\d)[٫٬](?=\d)")


def normalize_separators(buf: Aligned) -> Aligned:
    """Arabic decimal (٫) and thousands (٬) separators between digits → "." and ","."""
    return buf.rewrite(_DIGIT_SEPARATORS, lambda m, _t: "." if m.group() == "٫" else ",")


# -- markdown ---------------------------------------------------------------------------------------

_MD_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)")
_MD_URL = re.compile(r"\bhttps?://(?:www\.)?([^/\s]+)\S*|\bwww\.([^/\s]+)\S*")
_MD_DELETE = re.compile(
    r"""
    ^[ \t]*```[^\n]*$                     # code fence lines (with their language tag)
  | ^[ \t]*(?:[-*_][ \t]*){3,}$            # horizontal rules
  | ^[ \t]*\|?[ \t]*:?-{2,}:?[ \t]*(?:\|[ \t]*:?-{2,}:?[ \t]*)+\|?[ \t]*$   # table separator rows
  | ^[ \t]*\#{1,6}[ \t]+                   # heading marks
  | ^[ \t]*>+[ \t]?                        # block quotes
  | ^[ \t]*[-*+•·▪◦‣●○■□][ \t]+            # bullets
  | ^[ \t]*\|                              # table row edges
  | \|[ \t]*$
  | \*+ | _{2,} | ~~ | `+                  # emphasis, strike-through, code ticks
  | </?[A-Za-z][^<>\n]*>                   # HTML tags
    """,
    re.VERBOSE | re.MULTILINE,
)
_MD_NUMBERED = re.compile(r"^[ \t]*(\d{1,2})[.)][ \t]+", re.MULTILINE)


def strip_markdown(buf: Aligned) -> Aligned:
    """Markdown/LLM decoration → plain text: links become their text, lists and tables read."""
    buf = buf.rewrite(_MD_LINK, lambda m, _t: [(m.group(1), m.start(1), m.end(1)), ("", m.end(1), m.end())])
    buf = buf.rewrite(_MD_URL, lambda m, _t: (m.group(1) or m.group(2)).rstrip(".,;:!?)"))
    buf = buf.rewrite(_MD_DELETE, lambda _m, _t: "")
    buf = buf.rewrite(_MD_NUMBERED, _numbered_item)
    # Remaining table cell separators read as a pause.
    return buf.rewrite(re.compile(r"[ \t]*\|[ \t]*"), lambda _m, _t: "، ")


def _numbered_item(m: re.Match[str], _text: str) -> str:
    n = int(m.group(1))
    word = numbers.ordinal_adverb(n) or numbers.cardinal(n)
    return f"{word}، "


# -- punctuation and spacing ------------------------------------------------------------------------

_WORDCH = r"[^\W\d_]"
_PUNCT_RUN = re.compile(
    rf"""(?:[\s,،;؛:!?؟…"“”«»„‟()\[\]{{}}–—|/]
        | \.(?!{_WORDCH}) | (?<!{_WORDCH})\.
        | -(?!{_WORDCH}) | (?<!{_WORDCH})-
        | (?<!\w)'+ | '+(?!\w)
       )+""",
    re.VERBOSE,
)
_ELLIPSIS = re.compile(r"\.{2,}|…")
_SOFT = frozenset(",،;؛:…()[]{}–—|-")  # "/" is not a pause: و/أو → و أو


def punctuate(buf: Aligned, arabic_marks: bool = False) -> Aligned:
    """Collapse every run of spaces and punctuation into at most one mark and one space.

    The strongest mark of a run wins (? > ! > . > ,); a newline counts as a full stop, an ellipsis,
    a bracket, a dash or a colon as a comma (as the official punc_norm does). Quotes vanish.
    With ASCII marks (the default) "؟" → "?" and "، ؛" → ","; with `arabic_marks` the Arabic
    comma and question mark are used inside the text. The final mark is always ASCII: the
    pipeline appends "." to text that does not end in one of . ! ? , (that is the "؟." artefact).
    Leading punctuation and all outer whitespace are removed.
    """
    text = buf.text
    n = len(text)

    def fn(m: re.Match[str], _t: str) -> str | None:
        run = m.group()
        core = _ELLIPSIS.sub("،", run)
        if "?" in core or "؟" in core:
            mark = "?"
        elif "!" in core:
            mark = "!"
        elif "." in core or "\n" in core:
            mark = "."
        elif any(c in _SOFT for c in core):
            mark = ","
        else:
            mark = ""
        at_start, at_end = m.start() == 0, m.end() == n
        if at_start:
            rep = ""
        elif at_end:
            rep = mark
        else:
            if arabic_marks:
                mark = {"?": "؟", ",": "،"}.get(mark, mark)
            rep = mark + " "
        return None if rep == run else rep

    buf = buf.rewrite(_PUNCT_RUN, fn)
    # A hyphen touching Arabic joins nothing the listener hears (كوفيد-تسعة عشر): a space.
    return buf.rewrite(_ARABIC_HYPHEN, lambda _m, _t: " ")


_ARABIC_HYPHEN = re.compile(r"(?<=[\u0600-\u06ff])-(?=\S)|(?<=\S)-(?=[\u0600-\u06ff])")
