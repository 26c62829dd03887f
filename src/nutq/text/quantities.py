"""Numbers in running text: find them and read them the way a native speaker reads aloud.

One regex finds every numeric expression (phone numbers, dates, times, ranges, money, percents,
fractions, plain numbers); a handler reads it using the words around it:

* the word *after* decides agreement: a counted noun from the lexicon (ثلاث ساعات), a currency
  (مئة وخمسون ريالًا وخمسون هللة), a unit (خمسة كيلومترات), a month (الخامس عشر من مارس), a percent;
* the word *before* decides case and ordinal readings: a preposition or عام makes the number
  genitive (منذ عشرين عامًا، عام ألفين), a noun such as القرن or المادة makes it an ordinal
  adjective (القرن الحادي والعشرون), the article ال attached to digits (الـ25) makes an ordinal.

Ambiguities and the reading chosen (the common one):

* ``a/b`` with a < b <= 10 is a fraction (3/4 → ثلاثة أرباع) unless a date cue (في، يوم، بتاريخ)
  precedes; other valid day/month pairs are dates (15/3 → الخامس عشر من مارس).
* ``d/m/y`` is day-first as everywhere in the Arab world, month-first only when the day-first
  reading is impossible (03/15/2025). Two-digit years are 20yy below 50, else 19yy.
* ``a-b`` with a < b is a range (من عشرة إلى عشرين); with a >= b it is a score (ثلاثة مقابل واحد).
* ``N م`` is metres, except directly attached to a year-like number (2025م → للميلاد).
* A number starting with 0 (and longer than one digit), or with +/00, or grouped like 050 123 4567,
  is a phone number or code read digit by digit.
* ``N:M`` with a one-digit M is a score or ratio (2:1 → اثنان مقابل واحد); ``a.b.c`` that is not a
  date is a version or section number (3.11.7 → ثلاثة نقطة أحد عشر نقطة سبعة); ``+ = × x ÷``
  between digits are read as operators (زائد، يساوي، في، على).
* After a phone/code cue word (الهاتف، جوال، رمز، الرمز البريدي …) a number of 4+ digits is read
  digit by digit.
* 24-hour times after 12 get a period word (13:00 → الواحدة ظهرًا); minutes 15/20/30/40/45 use
  الربع/الثلث/النصف, 50 and 55 count down to the next hour (إلا عشر دقائق).
"""

from __future__ import annotations

import re

from nutq.text import lexicon as lx
from nutq.text.align import Aligned, Piece
from nutq.text.numbers import (
    MAX_CARDINAL, Case, Noun, cardinal, count, decimal, digits, fraction, hour_name, ordinal,
)

_NUM = r"\d+(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_CUR_CODES = "|".join(sorted((c for c in lx.CURRENCIES if c.isascii() and c.isalpha()), key=len, reverse=True))
_FRAC_CHARS = {"½": (1, 2), "⅓": (1, 3), "⅔": (2, 3), "¼": (1, 4), "¾": (3, 4), "⅕": (1, 5), "⅖": (2, 5),
               "⅗": (3, 5), "⅘": (4, 5), "⅙": (1, 6), "⅚": (5, 6), "⅛": (1, 8), "⅜": (3, 8),
               "⅝": (5, 8), "⅞": (7, 8)}
_AR = "\u0621-\u064a"  # Arabic letters, to check that a one-letter suffix is not a word's start

PATTERN = re.compile(
    rf"""
    (?P<phone>(?<![\w+])(?:\+|00)\d[\d \-]{{5,}}\d|(?<!\w)0\d{{1,3}}[ \-]\d{{3,4}}[ \-]?\d{{3,4}}(?!\d)|(?<!\w)0\d{{8,11}}(?!\d))
  | (?<!\d)(?P<iy>\d{{4}})-(?P<im>\d{{1,2}})-(?P<id>\d{{1,2}})(?![\d\-])
  | (?<![\d/.])(?P<d1>\d{{1,2}})(?P<sep>[/.\-])(?P<d2>\d{{1,2}})(?P=sep)(?P<d3>\d{{4}}|\d{{2}})(?![\d/])
  | (?<![\d.])(?P<ver>\d+(?:\.\d+){{2,3}})(?!\d|\.\d)
  | (?<![\d:])(?P<th>\d{{1,2}}):(?P<tm>\d{{2}})(?::(?P<ts>\d{{2}}))?(?![\d:])
      (?:\s?(?P<tp>[aApP]\.?[mM]\.?(?![A-Za-z])|ص(?![{_AR}])|م(?![{_AR}])|صباحًا|صباحا|مساءً|مساء|ظهرًا|ظهرا|عصرًا|عصرا|ليلًا|ليلا|فجرًا|فجرا))?
  | (?<![\d:])(?P<ra>\d{{1,2}}):(?P<rb>\d)(?![\d:])
  | (?<=\d)[ ]?(?P<op>[+=×÷xX])[ ]?(?=\d)
  | (?<![\d.,])(?P<r1>{_NUM})\s?[-–—]\s?(?P<r2>{_NUM})(?![\d\-])
  | (?P<cur>[$€£﷼]|\b(?:{_CUR_CODES})\b)\s?(?P<cnum>{_NUM})
  | (?:(?<!\w)(?P<fpre>[وفبلك])ـ?)?(?:(?P<fwhole>\d+)\s?)?(?P<fu>[{"".join(_FRAC_CHARS)}])
  | (?<![\d/])(?P<sa>\d{{1,2}})/(?P<sb>\d{{1,2}})(?![\d/])
  | [%٪]\s?(?P<pnum>{_NUM})
  | (?:(?<![\w.,\d])(?P<sign>[-+])|(?<![\w])(?P<pre>(?:وال|بال|فال|كال|لل|ال)ـ?[ ]?|[وفبلك]ـ?))?(?P<num>{_NUM})
    """,
    re.VERBOSE,
)

# Words after which a number is genitive: prepositions and nouns that take it in idafa.
GEN_TRIGGERS = frozenset({
    "في", "من", "إلى", "الى", "عن", "على", "منذ", "حتى", "بعد", "قبل", "خلال", "حوالي", "حوالى",
    "نحو", "بين", "مع", "عند", "لدى", "لمدة", "مدة", "بقيمة", "بمبلغ", "بنسبة", "نسبة", "قرابة", "زهاء", "لحوالي",
    "بحوالي", "عام", "سنة", "لعام", "لسنة", "بعام", "وعام", "عامي", "أعوام",
    # the one-letter prepositions written apart with tatweel ("بـ 150"), as they look before or
    # after the tatweel is dropped
    "ب", "ل", "ك", "بـ", "لـ", "كـ",
})
_YEAR_CUES = frozenset({"عام", "سنة", "لعام", "لسنة", "بعام", "العام", "السنة", "وعام", "منذ"})
# Words after which a long number is a phone number or code, read digit by digit.
_DIGIT_CUES = frozenset({
    "هاتف", "الهاتف", "جوال", "الجوال", "واتساب", "فاكس", "موبايل", "اتصل", "اتصلوا", "الرمز", "رمز",
    "البريدي", "كود", "الكود", "الحساب", "آيبان", "الآيبان", "التحقق", "المرجع", "الطلب",
})
_OPERATORS = {"+": "زائد", "=": "يساوي", "×": "في", "x": "في", "X": "في", "÷": "على"}
_DATE_CUES = frozenset({"في", "يوم", "بتاريخ", "تاريخ", "الموافق", "اليوم"})
_PERIODS = {"ص": "صباحًا", "am": "صباحًا", "م": "مساءً", "pm": "مساءً"}
_NEXT = re.compile(r"[ \u00a0]?((?:[^\W\d_]|[\u064b-\u065f\u0670/.])+|°\s?[Cم]|[°℃%٪$€£﷼])")
_YEAR_SUFFIX = re.compile(rf" ?(هـ|ه(?![{_AR}])|م(?![{_AR}]))")  # هـ: Hijri year, م: Gregorian
_PREV_WORDS = re.compile(r"(?:[^\W\d_]|[\u064b-\u065f\u0670])+")


def _int(s: str) -> int:
    return int(s.replace(",", ""))


def _words_before(text: str, i: int, k: int = 2) -> list[str]:
    return [lx.strip_marks(w) for w in _PREV_WORDS.findall(text[max(0, i - 40):i])[-k:]]


def _next_token(text: str, j: int) -> tuple[str, int] | None:
    """The word, unit or symbol right after position j (one optional space), and its end."""
    m = _NEXT.match(text, j)
    if not m:
        return None
    tok = m.group(1).rstrip(".")  # a sentence-final period is not part of the unit
    return tok, m.start(1) + len(tok)


def _plain(s: str, case: Case = "nom") -> str:
    """Fallback: every digit run of `s` read as a number, other characters become spaces."""
    return " ".join(_read_number(m.group(), case=case) for m in re.finditer(r"\d+", s))


def _read_number(s: str, *, fem: bool = False, case: Case = "nom") -> str:
    """A bare number string (commas, optional decimal part) in words."""
    whole, _, frac = s.replace(",", "").partition(".")
    if frac:
        return decimal(whole, frac, fem=fem, case=case)
    if (len(whole) > 1 and whole.startswith("0")) or int(whole) > MAX_CARDINAL:
        return digits(whole)
    return cardinal(int(whole), fem=fem, case=case)


def _money(s: str, cur: lx.Currency, case: Case) -> str:
    whole, _, frac = s.replace(",", "").partition(".")
    n = int(whole or "0")
    if n > MAX_CARDINAL:
        return f"{digits(whole)} {cur.main.sg}"
    width = len(str(cur.ratio)) - 1  # 100 → 2 digits of subunits, 1000 → 3
    if frac and (cur.sub is None or len(frac) > width):
        return f"{decimal(whole, frac, case=case)} {cur.main.sg}"
    sub = int(frac.ljust(width, "0")) if frac else 0
    if sub and n == 0:
        return count(sub, cur.sub, case=case)
    main = count(n, cur.main, case=case)
    return f"{main} و{count(sub, cur.sub, case=case)}" if sub else main


class NumberReader:
    """The rewrite callback for `PATTERN`; holds per-text state (the last number's case)."""

    def __init__(self, month_names: tuple[str, ...] = lx.MONTHS_GREGORIAN) -> None:
        self.months = month_names
        self._last_end = -1
        self._last_case: Case = "nom"

    def __call__(self, m: re.Match[str], text: str) -> list[Piece] | str | None:
        for kind in ("phone", "iy", "ver", "d1", "th", "ra", "op", "r1", "cur", "fu", "sa", "pnum", "num"):
            if m.group(kind) is not None:
                return getattr(self, "_" + kind)(m, text)
        return None

    # -- context --------------------------------------------------------------------------------

    def _case(self, text: str, start: int, pre: str | None = None) -> Case:
        if pre and pre[0] in "بلك":
            return "gen"
        if pre and pre[0] in "وف" and text[self._last_end:start - 1].strip() == "" and self._last_end >= 0:
            return self._last_case  # "بين 10 و20": the coordinated number shares the case
        prev = _words_before(text, start, 1)
        return "gen" if prev and prev[0] in GEN_TRIGGERS else "nom"

    def _done(self, end: int, case: Case) -> None:
        self._last_end, self._last_case = end, case

    # -- handlers -------------------------------------------------------------------------------

    def _phone(self, m: re.Match[str], text: str) -> str:
        s = m.group()
        groups = [g for g in re.split(r"[ \-]+", s) if g]
        words = []
        for gr in groups:
            plus = gr.startswith("+")
            w = digits(gr.lstrip("+"))
            words.append(("زائد " if plus else "") + w)
        return "، ".join(words)

    def _ver(self, m: re.Match[str], text: str) -> str:
        """Dotted versions and section numbers (3.11.7): the numbers joined by نقطة."""
        return " نقطة ".join(_read_number(p) for p in m.group("ver").split("."))

    def _ra(self, m: re.Match[str], text: str) -> str:
        """A score or ratio with a one-digit second part (2:1); times always have two digits."""
        return f"{_read_number(m.group('ra'))} مقابل {_read_number(m.group('rb'))}"

    def _op(self, m: re.Match[str], text: str) -> str:
        """Arithmetic between digits (5 + 3 = 8, 3x4 as a dimension: ثلاثة في أربعة)."""
        return f" {_OPERATORS[m.group('op')]} "

    def _year_suffix(self, text: str, j: int) -> tuple[str, int]:
        sm = _YEAR_SUFFIX.match(text, j)
        if not sm:
            return "", j
        return (" للهجرة" if sm.group(1).startswith("ه") else " للميلاد"), sm.end()

    def _date(
        self, m: re.Match[str], text: str, d: tuple[int, int, int], y: tuple[int, int, int], mo: tuple[int, int, int]
    ) -> list[Piece] | None:
        """Day, month, year as (value, start, end); each read piece maps to its own field."""
        day, da, db = d
        month, ma, mb = mo
        year, ya, yb = y
        if not (1 <= day <= 31 and 1 <= month <= 12):
            return None
        suffix, end = self._year_suffix(text, m.end())
        names = lx.MONTHS_HIJRI if "هجرة" in suffix else self.months
        pieces: list[Piece] = [
            (ordinal(day), da, db), (" ", db, db), ("من " + names[month - 1], ma, mb), (" ", mb, mb),
            ("عام " + cardinal(year, case="gen") + suffix, ya, max(yb, end)),
        ]
        return pieces

    def _iy(self, m: re.Match[str], text: str) -> list[Piece] | str:
        y, mo, d = (int(m.group(k)) for k in ("iy", "im", "id"))
        out = self._date(m, text, (d, *m.span("id")), (y, *m.span("iy")), (mo, *m.span("im")))
        return out or _plain(m.group())

    def _d1(self, m: re.Match[str], text: str) -> list[Piece] | str:
        a, b, y = int(m.group("d1")), int(m.group("d2")), m.group("d3")
        year = int(y) if len(y) == 4 else (2000 + int(y) if int(y) < 50 else 1900 + int(y))
        day, month, ds, ms = a, b, m.span("d1"), m.span("d2")
        if month > 12 and 1 <= a <= 12:  # month-first, only when day-first is impossible
            day, month, ds, ms = b, a, m.span("d2"), m.span("d1")
        out = self._date(m, text, (day, *ds), (year, *m.span("d3")), (month, *ms))
        return out or _plain(m.group())

    def _th(self, m: re.Match[str], text: str) -> str:
        h, mi = int(m.group("th")), int(m.group("tm"))
        s = int(m.group("ts") or 0)
        if h > 24 or mi > 59 or s > 59:
            return _plain(m.group())
        tp = (m.group("tp") or "").lower().replace(".", "")
        h %= 24
        period = _PERIODS.get(tp) or (m.group("tp") or "")
        if period and period[-1] == "ا" and period[-2] != "ً":  # صباحا → صباحًا
            period = period[:-1] + "ًا"
        if period == "مساء":
            period = "مساءً"
        if not period and h > 12:
            period = "ظهرًا" if h <= 14 else "عصرًا" if h <= 17 else "مساءً"
        elif not period and h == 0:
            period = "ليلًا"
        shown = h
        minute = {0: "", 15: "والربع", 20: "والثلث", 30: "والنصف", 40: "إلا ثلثًا", 45: "إلا ربعًا",
                  50: "إلا عشر دقائق", 55: "إلا خمس دقائق"}.get(mi)
        if mi >= 40 and minute is not None:
            shown = h + 1
        if minute is None:
            minute = "و" + count(mi, lx.MINUTE)
        words = [hour_name(shown % 12 or 12), minute]
        if s:
            words.append("و" + count(s, lx.SECOND))
        words.append(period)
        return " ".join(w for w in words if w)

    def _r1(self, m: re.Match[str], text: str) -> str | list[Piece]:
        a_s, b_s = m.group("r1"), m.group("r2")
        a, b = float(a_s.replace(",", "")), float(b_s.replace(",", ""))
        nxt = _next_token(text, m.end())
        case = self._case(text, m.start())
        if a >= b:  # a score or a subtraction-like pair: 3-1 → ثلاثة مقابل واحد
            return f"{_read_number(a_s, case=case)} مقابل {_read_number(b_s, case=case)}"
        tail, end = "", m.end()
        fem = False
        prev = _words_before(text, m.start(), 1)
        # After a preposition the range needs no من of its own ("خلال 10-15 دقيقة" → خلال عشر
        # إلى خمس عشرة دقيقةً; "من 10-20" must not read "من من"); after بين it is "X وY".
        frm = "" if prev and prev[0] in GEN_TRIGGERS else "من "
        to = " و" if prev and prev[0] == "بين" else " إلى "
        if nxt:
            tok, tend = nxt
            thing = self._noun_for(tok)
            if tok in "%٪":
                tail, end = " بالمئة", tend
            elif thing is not None and "." not in b_s:
                fem = thing.fem
                second = count(_int(b_s), thing, case="gen")
                self._done(tend, "gen")
                return [(f"{frm}{_read_number(a_s, fem=fem, case='gen')}{to}{second}", m.start(), tend)]
        self._done(end, "gen")
        words = f"{frm}{_read_number(a_s, fem=fem, case='gen')}{to}{_read_number(b_s, fem=fem, case='gen')}{tail}"
        return [(words, m.start(), end)]

    def _cur(self, m: re.Match[str], text: str) -> list[Piece]:
        cur = lx.CURRENCIES[m.group("cur")]
        s = m.group("cnum")
        case = self._case(text, m.start())
        nxt = _next_token(text, m.end())
        if nxt and (scale := self._scale(nxt[0])) is not None:  # $5 مليون → خمسة ملايين دولار
            return [(self._scaled(s, scale, case) + " " + cur.main.sg, m.start(), nxt[1])]
        return [(_money(s, cur, case), m.start(), m.end())]

    def _fu(self, m: re.Match[str], text: str) -> str:
        num, den = _FRAC_CHARS[m.group("fu")]
        case = self._case(text, m.start(), m.group("fpre"))
        frac = fraction(num, den, case=case)
        whole, pre = m.group("fwhole"), m.group("fpre") or ""
        if whole is None:
            return pre + frac
        return f"{pre}{_read_number(whole, case=case)} و{frac}"

    def _sa(self, m: re.Match[str], text: str) -> str:
        a, b = int(m.group("sa")), int(m.group("sb"))
        prev = _words_before(text, m.start(), 1)
        date_cue = bool(prev) and prev[0] in _DATE_CUES
        if 0 < a < b <= 10 and not date_cue:
            return fraction(a, b, case=self._case(text, m.start()))
        if 1 <= a <= 31 and 1 <= b <= 12:
            return f"{ordinal(a)} من {self.months[b - 1]}"
        return fraction(a, b)

    def _pnum(self, m: re.Match[str], text: str) -> str:
        return f"{_read_number(m.group('pnum'), case=self._case(text, m.start()))} بالمئة"

    def _noun_for(self, tok: str) -> Noun | None:
        if tok in lx.UNITS:
            return lx.UNITS[tok]
        return lx.NOUN_FORMS.get(lx.strip_marks(tok))

    def _scale(self, tok: str) -> Noun | None:
        n = lx.NOUN_FORMS.get(lx.strip_marks(tok))
        return n if n in lx.SCALES else None

    def _scaled(self, s: str, scale: Noun, case: Case) -> str:
        """A number followed by a scale word and then its counted noun: construct state."""
        if "." in s:
            whole, _, frac = s.replace(",", "").partition(".")
            return f"{decimal(whole, frac, case=case)} {scale.sg}"
        return count(_int(s), scale, case=case, construct=True, with_one=False)

    def _num(self, m: re.Match[str], text: str) -> list[Piece] | str:
        s, pre, sign = m.group("num"), (m.group("pre") or "").rstrip(" ـ"), m.group("sign")
        start, end = m.start(), m.end()
        case = self._case(text, start, pre)
        is_int = "." not in s
        head = {"-": "سالب ", "+": "زائد "}.get(sign or "", pre)  # words written before the number
        n = _int(s) if is_int else 0
        prev = _words_before(text, start, 2)
        last = prev[-1] if prev else ""

        # الـ25، بالـ3 → definite ordinal (gender from the noun before, by its ة). After a
        # definite plural the number is a definite cardinal instead: السنوات الـ10 → السنوات العشر
        # (non-human plural, feminine agreement of سنة: reverse gender gives عشر).
        if (pre.endswith("ال") or pre == "لل") and is_int and n <= MAX_CARDINAL:
            fem = last.endswith("ة") or lx.ORDINAL_NOUNS.get(last, False)
            plural_of = lx.NOUN_FORMS.get(last[2:]) if last.startswith("ال") else None
            ord_case: Case = case if pre[0] in "بلك" else "nom"
            nxt = _next_token(text, end)
            after = self._noun_for(nxt[0]) if nxt else None
            if after is not None and n > 2:  # في الـ3 سنوات → في الثلاث سنوات
                self._done(nxt[1], case)
                return [(pre[:-2] + "ال" + count(n, after, case=ord_case), start, nxt[1])]
            if plural_of is not None and plural_of.pl == last[2:] and n > 2:
                word = " و".join("ال" + part for part in cardinal(n, fem=plural_of.fem, case=ord_case).split(" و"))
            else:
                word = ordinal(n, fem=fem, case=ord_case)
            if pre == "لل":  # ل + ال is written لل: للخامس
                word = "لل" + word[2:] if word.startswith("ال") else "ل" + word
            else:
                word = pre[:-2] + word
            self._done(end, case)
            return word

        if is_int and len(s) >= 4 and not sign and (_DIGIT_CUES & set(prev)):
            self._done(end, case)  # رقم الهاتف 920000000، رمز التحقق 4821
            return [(head + digits(s), start, end)]
        nxt = _next_token(text, end)
        tok, tend = nxt if nxt else ("", end)
        out: str | None = None
        consumed = end
        if tok in ("%", "٪"):
            out, consumed = _read_number(s, case=case) + " بالمئة", tend
        elif tok in lx.CURRENCIES:
            out, consumed = _money(s, lx.CURRENCIES[tok], case), tend
        elif is_int and 1 <= n <= 31 and tok in lx.MONTH_FIRST_WORDS and not pre and not sign:
            out = f"{ordinal(n)} من"  # 15 مارس → الخامس عشر من مارس (the month word stays)
        elif tok in ("هـ", "ه") or tok == "م" and is_int and (
            (600 <= n <= 2200 and tend == end + 1) or last in _YEAR_CUES  # 2025م، عام 2025 م
        ):
            suffix, consumed = self._year_suffix(text, end)
            if is_int and n <= MAX_CARDINAL:
                if last in lx.MONTH_LAST_WORDS:  # 15 رمضان 1446هـ → … من رمضان عام ألف …
                    out, case = "عام " + cardinal(n, case="gen") + suffix, "gen"
                else:
                    out = cardinal(n, case=case) + suffix
        elif (thing := self._noun_for(tok)) is not None:
            cur = lx.CURRENCY_NAMES.get(thing)
            if cur is not None:
                # An agreeing nisba after the name (ريال سعودي) is inflected with it.
                adj = _next_token(text, tend)
                if adj and lx.strip_marks(adj[0]) in lx.NISBA:
                    base = lx.strip_marks(adj[0])
                    cur = lx.Currency(lx.with_nisba(cur.main, base), cur.sub, cur.ratio)
                    tend = adj[1]
                out, consumed = _money(s, cur, case), tend
            elif thing in lx.SCALES:
                after = _next_token(text, tend)
                construct = bool(after) and lx.strip_marks(after[0]) not in GEN_TRIGGERS and after[0][0] in _AR_LETTERS
                if construct or not is_int:
                    out, consumed = self._scaled(s, thing, case), tend
                else:
                    out, consumed = count(n, thing, case=case, with_one=False), tend
            elif is_int and n <= MAX_CARDINAL:
                out, consumed = count(n, thing, case=case), tend
            else:
                out, consumed = f"{_read_number(s, fem=thing.fem, case=case)} {thing.sg}", tend
        if out is None:
            if is_int and last in lx.ORDINAL_NOUNS and 0 < n < 1000 and not pre and not sign:
                out = ordinal(n, fem=lx.ORDINAL_NOUNS[last], case=case)
            elif is_int and last in lx.MONTH_LAST_WORDS and 1000 <= n <= 2200 and not sign:
                out = "عام " + cardinal(n, case="gen")  # 15 مارس 2025 → … من مارس عام ألفين …
                case = "gen"
            elif is_int and last in _YEAR_CUES and not sign and n <= MAX_CARDINAL:
                # عام 2025 is an idafa (genitive); العام 2025 is an apposition (keeps the case).
                out = cardinal(n, case=case if last in ("العام", "السنة") else "gen")
            else:
                out = _read_number(s, case=case)
        self._done(consumed, case)
        return [(head + out, start, consumed)]


_AR_LETTERS = frozenset(chr(c) for c in range(0x0621, 0x064B))


def read_numbers(buf: Aligned, month_names: tuple[str, ...] = lx.MONTHS_GREGORIAN) -> Aligned:
    """Rewrite every numeric expression of `buf` into words (digits must already be ASCII)."""
    return buf.rewrite(PATTERN, NumberReader(month_names))
