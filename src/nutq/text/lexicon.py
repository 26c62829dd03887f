"""Small lexicons the number reader needs: counted nouns, units, currencies, month names.

A counted noun's gender decides the form of 1–19 (reverse agreement for 3–10), so the frontend
only agrees a number with the word after it when that word is listed here; any other word leaves
the number in its default (masculine, nominative) reading. The lists are deliberately small and
cover what numbers are most often followed by in news, chat and LLM output.
"""

from __future__ import annotations

from dataclasses import dataclass

from nutq.text.numbers import BILLION, MILLION, THOUSAND, TRILLION, Noun, noun, with_nisba, with_words


def _m(sg: str, dual: str | None, pl: str, acc: str | None = None) -> Noun:
    return noun(sg, acc, dual, pl, fem=False)


def _f(sg: str, dual: str | None, pl: str, acc: str | None = None) -> Noun:
    return noun(sg, acc, dual, pl, fem=True)


def _inv(word: str, fem: bool = False) -> Noun:
    # Invariable loanwords (يورو، جيجابايت): one form for every number, no dual.
    return Noun(word, word, None, None, word, fem)


DAY = _m("يوم", "يومان", "أيام")
HOUR = _f("ساعة", "ساعتان", "ساعات")
MINUTE = _f("دقيقة", "دقيقتان", "دقائق")
SECOND = _f("ثانية", "ثانيتان", "ثوان")
YEAR = _m("عام", "عامان", "أعوام")
DEGREE = _f("درجة", "درجتان", "درجات")
CELSIUS = with_nisba(DEGREE, "مئوي")
METER = _m("متر", "متران", "أمتار")
KILOMETER = _m("كيلومتر", "كيلومتران", "كيلومترات")
CENTIMETER = _m("سنتيمتر", "سنتيمتران", "سنتيمترات")
MILLIMETER = _m("مليمتر", "مليمتران", "مليمترات")
KILOGRAM = _m("كيلوغرام", "كيلوغرامان", "كيلوغرامات")
GRAM = _m("غرام", "غرامان", "غرامات")
MILLIGRAM = _m("مليغرام", "مليغرامان", "مليغرامات")
LITER = _m("لتر", "لتران", "لترات")
MILLILITER = _m("مليلتر", "مليلتران", "مليلترات")
KMH = with_words(KILOMETER, "في الساعة")

COUNTED: tuple[Noun, ...] = (
    DAY, HOUR, MINUTE, SECOND, YEAR, DEGREE,
    _m("أسبوع", "أسبوعان", "أسابيع"),
    _m("شهر", "شهران", "أشهر"),
    _f("سنة", "سنتان", "سنوات"),
    _m("قرن", "قرنان", "قرون"),
    _f("مرة", "مرتان", "مرات"),
    _m("شخص", "شخصان", "أشخاص"),
    _m("طالب", "طالبان", "طلاب"),
    _f("طالبة", "طالبتان", "طالبات"),
    _m("رجل", "رجلان", "رجال"),
    _f("امرأة", "امرأتان", "نساء"),
    _m("طفل", "طفلان", "أطفال"),
    _m("كتاب", "كتابان", "كتب"),
    _f("دولة", "دولتان", "دول"),
    _f("مدينة", "مدينتان", "مدن"),
    _f("سيارة", "سيارتان", "سيارات"),
    _f("صفحة", "صفحتان", "صفحات"),
    _f("نقطة", "نقطتان", "نقاط"),
    _f("كلمة", "كلمتان", "كلمات"),
    _f("شركة", "شركتان", "شركات"),
    _f("ليلة", "ليلتان", "ليال"),
    _f("حالة", "حالتان", "حالات"),
    _f("غرفة", "غرفتان", "غرف"),
    _m("هدف", "هدفان", "أهداف"),
    _m("سؤال", "سؤالان", "أسئلة"),
    _m("فرد", "فردان", "أفراد"),
    _m("موظف", "موظفان", "موظفين"),
    _m("لاعب", "لاعبان", "لاعبين"),
    _m("مشروع", "مشروعان", "مشاريع"),
    _m("بيت", "بيتان", "بيوت"),
    _m("طن", "طنان", "أطنان"),
    _m("برميل", "برميلان", "براميل"),
    _m("ميل", "ميلان", "أميال"),
    METER, KILOMETER, CENTIMETER, MILLIMETER, KILOGRAM, GRAM, MILLIGRAM, LITER, MILLILITER,
    THOUSAND, MILLION, BILLION, TRILLION,
)

SCALES: tuple[Noun, ...] = (THOUSAND, MILLION, BILLION, TRILLION)


@dataclass(frozen=True, slots=True)
class Currency:
    main: Noun
    sub: Noun | None  # the subunit (هللة، فلس …) used for the decimal part
    ratio: int  # subunits per unit (100, or 1000 for the dinars of the Gulf and Iraq, the Omani rial)


_RIYAL = _m("ريال", "ريالان", "ريالات")
_DIRHAM = _m("درهم", "درهمان", "دراهم")
_POUND = _m("جنيه", "جنيهان", "جنيهات")
_DINAR = _m("دينار", "ديناران", "دنانير")
_DOLLAR = _m("دولار", "دولاران", "دولارات")
_LIRA = _f("ليرة", "ليرتان", "ليرات")
_EURO = _inv("يورو")
_HALALA = _f("هللة", "هللتان", "هللات")
_FILS = _m("فلس", "فلسان", "فلوس")
_QIRSH = _m("قرش", "قرشان", "قروش")
_CENT = _m("سنت", "سنتان", "سنتات")
_BAISA = _f("بيسة", "بيستان", "بيسات")
_PENNY = _m("بنس", "بنسان", "بنسات")
_CENTIME = _m("سنتيم", "سنتيمان", "سنتيمات")
_MILLIME = _m("مليم", "مليمان", "مليمات")

# ISO codes, symbols and Arabic abbreviations. "$" is read دولار without "أمريكي", as speakers do.
CURRENCIES: dict[str, Currency] = {
    "SAR": Currency(with_nisba(_RIYAL, "سعودي"), _HALALA, 100),
    "AED": Currency(with_nisba(_DIRHAM, "إماراتي"), _FILS, 100),
    "EGP": Currency(with_nisba(_POUND, "مصري"), _QIRSH, 100),
    "USD": Currency(_DOLLAR, _CENT, 100),
    "EUR": Currency(_EURO, _CENT, 100),
    "GBP": Currency(with_nisba(_POUND, "إسترليني"), _PENNY, 100),
    "KWD": Currency(with_nisba(_DINAR, "كويتي"), _FILS, 1000),
    "QAR": Currency(with_nisba(_RIYAL, "قطري"), _DIRHAM, 100),
    "BHD": Currency(with_nisba(_DINAR, "بحريني"), _FILS, 1000),
    "OMR": Currency(with_nisba(_RIYAL, "عماني"), _BAISA, 1000),
    "JOD": Currency(with_nisba(_DINAR, "أردني"), _QIRSH, 100),
    "IQD": Currency(with_nisba(_DINAR, "عراقي"), _FILS, 1000),
    "MAD": Currency(with_nisba(_DIRHAM, "مغربي"), _CENTIME, 100),
    "TND": Currency(with_nisba(_DINAR, "تونسي"), _MILLIME, 1000),
    "LBP": Currency(with_nisba(_LIRA, "لبناني"), _QIRSH, 100),
    "TRY": Currency(with_nisba(_LIRA, "تركي"), _QIRSH, 100),
}
for _code, _alias in (("USD", "$"), ("EUR", "€"), ("GBP", "£"), ("SAR", "﷼"), ("SAR", "ر.س"),
                      ("AED", "د.إ"), ("EGP", "ج.م"), ("KWD", "د.ك"), ("QAR", "ر.ق"), ("BHD", "د.ب"),
                      ("OMR", "ر.ع"), ("JOD", "د.أ")):
    CURRENCIES[_alias] = CURRENCIES[_code]

# Arabic currency names written after a number: the bare noun, with the most common subunit.
CURRENCY_NAMES: dict[Noun, Currency] = {
    _RIYAL: Currency(_RIYAL, _HALALA, 100),
    _DIRHAM: Currency(_DIRHAM, _FILS, 100),
    _POUND: Currency(_POUND, _QIRSH, 100),
    _DINAR: Currency(_DINAR, _FILS, 1000),
    _DOLLAR: Currency(_DOLLAR, _CENT, 100),
    _EURO: Currency(_EURO, _CENT, 100),
    _LIRA: Currency(_LIRA, _QIRSH, 100),
}
# Nisba adjectives that may follow a currency name in the text (ريال سعودي) and must agree.
NISBA = frozenset({"سعودي", "إماراتي", "مصري", "كويتي", "قطري", "بحريني", "عماني", "أردني", "عراقي",
                   "مغربي", "تونسي", "لبناني", "تركي", "أمريكي", "إسترليني", "جزائري", "ليبي", "سوري"})

# Unit abbreviations written after a number, Latin and Arabic.
UNITS: dict[str, Noun] = {
    "km": KILOMETER, "كم": KILOMETER, "m": METER, "م": METER, "cm": CENTIMETER, "سم": CENTIMETER,
    "mm": MILLIMETER, "مم": MILLIMETER, "kg": KILOGRAM, "كغ": KILOGRAM, "كجم": KILOGRAM,
    "g": GRAM, "غ": GRAM, "جم": GRAM, "mg": MILLIGRAM, "ملغ": MILLIGRAM, "l": LITER, "L": LITER,
    "ml": MILLILITER, "مل": MILLILITER, "km/h": KMH, "كم/س": KMH, "كم/ساعة": KMH, "kph": KMH,
    "GB": _inv("جيجابايت"), "MB": _inv("ميجابايت"), "KB": _inv("كيلوبايت"), "TB": _inv("تيرابايت"),
    "Hz": _inv("هرتز"), "kHz": _inv("كيلوهرتز"), "MHz": _inv("ميجاهرتز"), "GHz": _inv("جيجاهرتز"),
    "W": _m("واط", "واطان", "واطات"), "kW": _m("كيلوواط", "كيلوواطان", "كيلوواطات"),
    "V": _m("فولت", "فولتان", "فولتات"), "°C": CELSIUS, "°م": CELSIUS, "℃": CELSIUS, "°": DEGREE,
}


def strip_marks(word: str) -> str:
    """The word without harakat, so lookups match vocalised and bare spellings alike."""
    return word.translate(_MARKS)


_MARKS = {c: None for c in range(0x064B, 0x0660)} | {0x0670: None}


def _surface_forms(n: Noun) -> set[str]:
    # Keyed without harakat: كتابًا، كتاباً and كتابا are one key.
    forms = {n.sg, n.pl, n.acc}
    forms.update(f for f in (n.dual_nom, n.dual_gen) if f)
    return {strip_marks(f) for f in forms if " " not in f}


def _build_lookup() -> dict[str, Noun]:
    table: dict[str, Noun] = {}
    for n in (*COUNTED, *CURRENCY_NAMES):
        for f in _surface_forms(n):
            table.setdefault(f, n)
    # Other plurals in common use, read as the lexicon's plural (سبع سنين → سبع سنوات).
    for alias, sg in (("سنين", "سنة"), ("ساعه", "ساعة"), ("دقايق", "دقيقة"), ("شهور", "شهر"), ("أسابيع", "أسبوع")):
        table.setdefault(alias, table[sg])
    return table


# Any written form of a counted noun (كتاب، كتابا، كتابًا، كتابان، كتابين، كتب), without
# harakat (see strip_marks) → its Noun.
NOUN_FORMS: dict[str, Noun] = _build_lookup()

# Month names. Numeric dates use the names common in Egypt and the Gulf (يناير …); the Levantine
# and Iraqi names (كانون الثاني …) are an option of the frontend config.
MONTHS_GREGORIAN = ("يناير", "فبراير", "مارس", "أبريل", "مايو", "يونيو", "يوليو", "أغسطس",
                    "سبتمبر", "أكتوبر", "نوفمبر", "ديسمبر")
MONTHS_LEVANTINE = ("كانون الثاني", "شباط", "آذار", "نيسان", "أيار", "حزيران", "تموز", "آب",
                    "أيلول", "تشرين الأول", "تشرين الثاني", "كانون الأول")
MONTHS_HIJRI = ("محرم", "صفر", "ربيع الأول", "ربيع الآخر", "جمادى الأولى", "جمادى الآخرة", "رجب",
                "شعبان", "رمضان", "شوال", "ذو القعدة", "ذو الحجة")
# First words of month names as they appear after a day number (15 مارس، 3 ذو الحجة).
MONTH_FIRST_WORDS: frozenset[str] = frozenset(
    {m.split(" ")[0] for m in (*MONTHS_GREGORIAN, *MONTHS_LEVANTINE, *MONTHS_HIJRI)}
    | {"إبريل", "ابريل", "يونيه", "يوليه", "اغسطس", "أغسطس", "اكتوبر", "محرّم", "ربيع", "جمادى", "ذي"}
) - {"صفر"}  # صفر is also "zero"; "15 صفر" is too rare to outweigh misreading numbers
MONTH_LAST_WORDS: frozenset[str] = frozenset(m.split(" ")[-1] for m in (*MONTHS_GREGORIAN, *MONTHS_LEVANTINE, *MONTHS_HIJRI))

# Nouns after which a number is read as an ordinal adjective (القرن 21 → القرن الحادي والعشرون),
# with the gender the ordinal takes.
ORDINAL_NOUNS: dict[str, bool] = {
    "القرن": False, "الطابق": False, "الفصل": False, "الباب": False, "المركز": False,
    "الجزء": False, "الصف": False, "الموسم": False, "المجلد": False, "الشوط": False,
    "الأسبوع": False, "اليوم": False, "المؤتمر": False, "المرتبة": True, "الحلقة": True,
    "الدورة": True, "النسخة": True, "الطبعة": True, "الجولة": True, "المادة": True,
    "الفقرة": True, "المرحلة": True, "الذكرى": True, "السورة": True, "الآية": True,
    "الصفحة": True, "الدرس": False, "المستوى": False, "البند": False, "الحلقة": True, "الوحدة": True,
}
