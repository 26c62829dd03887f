"""Modern Standard Arabic number words: cardinals, counted nouns, ordinals, decimals, fractions.

Reading conventions (chosen once, used everywhere):

* **Case.** Unvocalised Arabic shows case on few number words: the duals (اثنان/اثنين,
  مئتان/مئتين, ألفان/ألفين), the tens (عشرون/عشرين) and 12 (اثنا/اثني عشر). The default reading
  form is the nominative (marfu'), the citation form a reader uses for a bare number. Callers pass
  ``case="gen"`` where the syntax the frontend can see forces the genitive (after a preposition,
  or in an idafa the frontend builds itself such as عام + year). Accusative appears only as the
  tamyiz of 11–99 (كتابًا), which the counted-noun forms carry.
* **Gender.** ``fem`` is the gender of the *counted* noun. 1 and 2 agree with it, 3–10 take the
  opposite form (reverse agreement: ثلاثة كتب، ثلاث سيارات), 11–19 combine both rules, tens do
  not change. A bare number with no known noun is read as if counting a masculine noun
  (ثلاثة، خمسة وعشرون), which is how numbers are recited.
* **Spelling.** مئة (not مائة), ثلاثمئة joined, tanween fatha written on the tamyiz (ألفًا) since
  it is pronounced (-an) and the vocabulary has U+064B.
* **Scales** ألف، مليون، مليار، تريليون are nouns counted like any other: ألف، ألفان، ثلاثة آلاف،
  أحد عشر ألفًا، مئة ألف. Numbers up to 10^15 - 1 are verbalised.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Case = Literal["nom", "gen"]

MAX_CARDINAL = 10**15 - 1

# Units as used with a *masculine* counted noun: 3-10 carry ة (reverse agreement).
_UNITS_M = ("صفر", "واحد", "اثنان", "ثلاثة", "أربعة", "خمسة", "ستة", "سبعة", "ثمانية", "تسعة", "عشرة")
# Units as used with a *feminine* counted noun: 3-10 without ة.
_UNITS_F = ("صفر", "واحدة", "اثنتان", "ثلاث", "أربع", "خمس", "ست", "سبع", "ثماني", "تسع", "عشر")
_TENS = ("", "", "عشرون", "ثلاثون", "أربعون", "خمسون", "ستون", "سبعون", "ثمانون", "تسعون")
_HUNDREDS = ("", "مئة", "مئتان", "ثلاثمئة", "أربعمئة", "خمسمئة", "ستمئة", "سبعمئة", "ثمانمئة", "تسعمئة")

_ORD_M = ("", "الأول", "الثاني", "الثالث", "الرابع", "الخامس", "السادس", "السابع", "الثامن", "التاسع", "العاشر")
_ORD_F = ("", "الأولى", "الثانية", "الثالثة", "الرابعة", "الخامسة", "السادسة", "السابعة", "الثامنة", "التاسعة", "العاشرة")
# Adverbial ordinals used for enumerations ("firstly") in numbered lists.
_ORD_ADVERB = ("", "أولًا", "ثانيًا", "ثالثًا", "رابعًا", "خامسًا", "سادسًا", "سابعًا", "ثامنًا", "تاسعًا", "عاشرًا")


@dataclass(frozen=True, slots=True)
class Noun:
    """The forms of a countable noun that Arabic number syntax selects.

    sg: singular, used after 1 (كتاب واحد) and as genitive after 100, 1000 … (مئة كتاب);
    acc: singular accusative tamyiz after 11–99 (أحد عشر كتابًا);
    dual_nom / dual_gen: the dual (كتابان / كتابين); None for invariable loans (يورو);
    pl: the plural, genitive after 3–10 (ثلاثة كتب);
    fem: grammatical gender, which drives number agreement.
    """

    sg: str
    acc: str
    dual_nom: str | None
    dual_gen: str | None
    pl: str
    fem: bool

    def dual(self, case: Case, construct: bool = False) -> str | None:
        d = self.dual_gen if case == "gen" else self.dual_nom
        if d is None:
            return None
        if construct:  # dual in idafa loses its nun: ألفا ريال، مئتا كتاب
            first, _, rest = d.partition(" ")
            first = first[:-1] if first.endswith("ن") else first
            return f"{first} {rest}".rstrip()
        return d


def noun(sg: str, acc: str | None, dual: str | None, pl: str, fem: bool) -> Noun:
    """Build a Noun; the genitive dual is derived (-ان → -ين), acc defaults to regular tanween."""
    if acc is None:
        acc = sg + "ً" if sg.endswith("ة") else sg + "ًا"
    dual_gen = None if dual is None else _dual_gen(dual)
    return Noun(sg, acc, dual, dual_gen, pl, fem)


def _dual_gen(dual_nom: str) -> str:
    # Every word of a dual phrase ends in -ان (ريالان سعوديان); the genitive ends in -ين.
    return " ".join(w[:-2] + "ين" if w.endswith("ان") else w for w in dual_nom.split(" "))


def with_words(n: Noun, suffix: str) -> Noun:
    """A noun followed by an invariable complement (كيلومتر في الساعة)."""

    def add(s: str | None) -> str | None:
        return None if s is None else f"{s} {suffix}"

    return Noun(n.sg + " " + suffix, n.acc + " " + suffix, add(n.dual_nom), add(n.dual_gen), n.pl + " " + suffix, n.fem)


def with_nisba(n: Noun, adj: str) -> Noun:
    """A noun qualified by a nisba adjective (ريال سعودي), inflected in agreement.

    The adjective follows its noun in number, gender and case; after 3–10 a non-human plural takes
    a feminine singular adjective (ريالات سعودية).
    """
    base = adj[:-1] if adj.endswith("ة") else adj
    if n.fem:
        sg, acc, dual, pl = base + "ة", base + "ةً", base + "تان", base + "ة"
    else:
        sg, acc, dual, pl = base, base + "ًا", base + "ان", base + "ة"
    return Noun(
        f"{n.sg} {sg}",
        f"{n.acc} {acc}",
        None if n.dual_nom is None else f"{n.dual_nom} {dual}",
        None if n.dual_gen is None else f"{n.dual_gen} {_dual_gen(dual)}",
        f"{n.pl} {pl}",
        n.fem,
    )


# Scale nouns, masculine: ثلاثة آلاف (reverse agreement, genitive plural), أحد عشر ألفًا (tamyiz).
THOUSAND = noun("ألف", "ألفًا", "ألفان", "آلاف", fem=False)
MILLION = noun("مليون", "مليونًا", "مليونان", "ملايين", fem=False)
BILLION = noun("مليار", "مليارًا", "ملياران", "مليارات", fem=False)
TRILLION = noun("تريليون", "تريليونًا", "تريليونان", "تريليونات", fem=False)
_SCALES = ((10**12, TRILLION), (10**9, BILLION), (10**6, MILLION), (10**3, THOUSAND))


def _unit(u: int, fem: bool, case: Case) -> str:
    """1..10 agreeing with a counted noun of gender `fem` (1, 2 agree; 3–10 reverse)."""
    if u == 2:
        w = "اثنتان" if fem else "اثنان"
        return w[:-2] + "ين" if case == "gen" else w
    return (_UNITS_F if fem else _UNITS_M)[u]


def _tens(t: int, case: Case) -> str:
    w = _TENS[t]
    return w[:-2] + "ين" if case == "gen" else w  # sound masculine plural pattern: -ون / -ين


def _below_100(n: int, fem: bool, case: Case) -> str:
    if n <= 10:
        return _unit(n, fem, case)
    if n == 11:  # both parts agree with the noun
        return "إحدى عشرة" if fem else "أحد عشر"
    if n == 12:  # اثنا/اثنتا inflect like a dual, عشر/عشرة agree with the noun
        first = ("اثنتا" if fem else "اثنا") if case == "nom" else ("اثنتي" if fem else "اثني")
        return f"{first} {'عشرة' if fem else 'عشر'}"
    t, u = divmod(n, 10)
    if t == 1:  # 13–19: unit with reverse agreement, عشر agreeing with the noun
        return f"{_unit(u, fem, case)} {'عشرة' if fem else 'عشر'}"
    if u == 0:
        return _tens(t, case)
    if u == 1:  # 21, 31 …: واحد / إحدى (إحدى is the feminine used in compounds)
        first = "إحدى" if fem else "واحد"
    else:
        first = _unit(u, fem, case)
    return f"{first} و{_tens(t, case)}"


def _below_1000(n: int, fem: bool, case: Case, construct: bool) -> str:
    h, r = divmod(n, 100)
    parts = []
    if h:
        w = _HUNDREDS[h]
        if h == 2:
            w = "مئتين" if case == "gen" else "مئتان"
            if construct and r == 0:
                w = w[:-1]  # مئتا كتاب / مئتي كتاب
        parts.append(w)
    if r:
        parts.append(_below_100(r, fem, case))
    return " و".join(parts)


def cardinal(n: int, *, fem: bool = False, case: Case = "nom", construct: bool = False) -> str:
    """Cardinal number words, 0 <= n <= MAX_CARDINAL.

    `construct`: the number is directly followed by a genitive noun (idafa), which drops the nun
    of a final dual (مئتا، ألفا) and the tanween of a final tamyiz (أحد عشر ألفَ ريال).
    """
    if n < 0 or n > MAX_CARDINAL:
        raise ValueError(f"cardinal out of range: {n}")
    if n == 0:
        return "صفر"
    parts = []
    rest = n
    for value, scale in _SCALES:
        c, rest = divmod(rest, value)
        if c:
            parts.append(count(c, scale, case=case, construct=construct and rest == 0, with_one=False))
    if rest:
        parts.append(_below_1000(rest, fem, case, construct))
    return " و".join(parts)


def count(
    n: int, thing: Noun, *, case: Case = "nom", construct: bool = False, with_one: bool = True
) -> str:
    """`n` followed by (or, for 1 and 2, expressed by) the counted noun, with full agreement.

    0 → صفر + singular; 1 → noun + واحد (with_one) ; 2 → dual; 3–10 → number + genitive plural;
    11–99 → number + accusative singular (tamyiz); 100s, 1000s … → number + genitive singular.
    For n > 100 ending in 01 or 02 the classical pattern of «ألف ليلة وليلة» is used: the round
    part counts the singular and the remainder is added as a coordinated noun (مئة كتاب وكتاب،
    مئة كتاب وكتابان); "مئة وواحد كتاب" is avoided because واحد cannot precede its noun.
    `construct` marks that the whole phrase is itself followed by a genitive (ألفا ريال).
    """
    if n == 0:
        return f"صفر {thing.sg}"
    if n == 1:
        if not with_one:
            return thing.sg
        return f"{thing.sg} {'واحدة' if thing.fem else 'واحد'}"
    if n == 2:
        d = thing.dual(case, construct)
        return d if d is not None else f"{_unit(2, thing.fem, case)} {thing.sg}"
    r = n % 100
    if n > 100 and r in (1, 2):
        head = count(n - r, thing, case=case)
        tail = thing.sg if r == 1 else thing.dual(case, construct) or f"{_unit(2, thing.fem, case)} {thing.sg}"
        return f"{head} و{tail}"
    number = cardinal(n, fem=thing.fem, case=case, construct=(r == 0))
    if r == 0:
        return f"{number} {thing.sg}"
    if 3 <= r <= 10:
        return f"{number} {thing.pl}"
    acc = thing.sg if construct else thing.acc  # tamyiz in idafa loses its tanween
    return f"{number} {acc}"


def ordinal(n: int, *, fem: bool = False, case: Case = "nom") -> str:
    """Definite ordinal adjective (الأول، الحادية عشرة، الخامس والعشرون).

    Above 100 the classical "بعد" construction is used (الحادي بعد المئة); round hundreds and
    thousands take the article (المئة، الألف); other round numbers above 100 have no settled
    ordinal form and are read as "رقم" + cardinal.
    """
    if n <= 0:
        return "رقم " + cardinal(max(n, 0))
    if n <= 10:
        return (_ORD_F if fem else _ORD_M)[n]
    if n < 20:
        u = n - 10
        first = ("الحادية" if fem else "الحادي") if u == 1 else (_ORD_F if fem else _ORD_M)[u]
        return f"{first} {'عشرة' if fem else 'عشر'}"
    if n < 100:
        t, u = divmod(n, 10)
        tens = "ال" + _tens(t, case)
        if u == 0:
            return tens
        first = ("الحادية" if fem else "الحادي") if u == 1 else (_ORD_F if fem else _ORD_M)[u]
        return f"{first} و{tens}"
    r = n % 100
    # After بعد the round part is genitive (الخامس والعشرون بعد الألفين).
    base = cardinal(n - r, case=case if r == 0 else "gen")
    definite = "ال" + base if " " not in base else None
    if r == 0:
        return definite or "رقم " + base
    if definite is None:
        return "رقم " + cardinal(n, case=case)
    # In the بعد construction 1 takes its compound form: الحادي بعد المئة (not الأول).
    first = ("الحادية" if fem else "الحادي") if r == 1 else ordinal(r, fem=fem, case=case)
    return f"{first} بعد {definite}"


def ordinal_adverb(n: int) -> str | None:
    """أولًا … عاشرًا for enumerations, None above 10."""
    return _ORD_ADVERB[n] if 1 <= n <= 10 else None


def hour_name(h: int) -> str:
    """Hour of the clock, 1..12, as read after الساعة (feminine; 1 is الواحدة, not الأولى)."""
    if h == 1:
        return "الواحدة"
    return ordinal(h, fem=True)


def digits(s: str) -> str:
    """Read a digit string one digit at a time (phone numbers, codes, leading zeros)."""
    return " ".join(_UNITS_M[int(c)] for c in s)


def decimal(int_part: str, frac: str, *, fem: bool = False, case: Case = "nom") -> str:
    """3.25 → ثلاثة فاصلة خمسة وعشرون.

    The fraction is read as a whole number when it has at most 3 digits (the common reading),
    leading zeros first as صفر (0.05 → صفر فاصلة صفر خمسة); longer fractions digit by digit.
    Trailing zeros are kept as written (2.50 → اثنان فاصلة خمسون).
    """
    head = cardinal(int(int_part or "0"), fem=fem, case=case)
    if len(frac) > 3:
        return f"{head} فاصلة {digits(frac)}"
    stripped = frac.lstrip("0")
    zeros = len(frac) - len(stripped)
    words = ["صفر"] * zeros
    if stripped:
        words.append(cardinal(int(stripped), fem=fem, case=case))
    return f"{head} فاصلة {' '.join(words)}"


# Fraction nouns by denominator (all masculine): نصف، ثلث … with dual and broken plural.
FRACTIONS = {
    2: noun("نصف", None, "نصفان", "أنصاف", fem=False),
    3: noun("ثلث", None, "ثلثان", "أثلاث", fem=False),
    4: noun("ربع", None, "ربعان", "أرباع", fem=False),
    5: noun("خمس", None, "خمسان", "أخماس", fem=False),
    6: noun("سدس", None, "سدسان", "أسداس", fem=False),
    7: noun("سبع", None, "سبعان", "أسباع", fem=False),
    8: noun("ثمن", None, "ثمنان", "أثمان", fem=False),
    9: noun("تسع", None, "تسعان", "أتساع", fem=False),
    10: noun("عشر", None, "عشران", "أعشار", fem=False),
}


def fraction(num: int, den: int, *, case: Case = "nom") -> str:
    """1/4 → ربع، 2/3 → ثلثان، 3/4 → ثلاثة أرباع; other denominators: "N على M"."""
    if den in FRACTIONS and 0 < num < den:
        return count(num, FRACTIONS[den], case=case, with_one=False)
    return f"{cardinal(num, case=case)} على {cardinal(den, case='gen')}"
