"""Arabic number words, table-driven; each expectation written from MSA grammar.

Conventions under test (see nutq.text.numbers): nominative by default, masculine counting for a
bare number, مئة spelling, tanween fatha on the tamyiz.
"""

import pytest

from nutq.text import lexicon as lx
from nutq.text.numbers import (
    MAX_CARDINAL, THOUSAND, cardinal, count, decimal, digits, fraction, hour_name, ordinal, ordinal_adverb,
)

CARDINALS = [
    (0, "صفر"),
    (1, "واحد"),
    (2, "اثنان"),
    (3, "ثلاثة"),
    (8, "ثمانية"),
    (10, "عشرة"),
    (11, "أحد عشر"),
    (12, "اثنا عشر"),  # اثنا inflects like a dual: nominative -ا
    (13, "ثلاثة عشر"),
    (18, "ثمانية عشر"),
    (19, "تسعة عشر"),
    (20, "عشرون"),
    (21, "واحد وعشرون"),  # units before tens, joined by و
    (22, "اثنان وعشرون"),
    (35, "خمسة وثلاثون"),
    (99, "تسعة وتسعون"),
    (100, "مئة"),
    (101, "مئة وواحد"),
    (110, "مئة وعشرة"),
    (200, "مئتان"),  # dual of مئة
    (300, "ثلاثمئة"),  # written joined
    (800, "ثمانمئة"),
    (999, "تسعمئة وتسعة وتسعون"),
    (1000, "ألف"),
    (1001, "ألف وواحد"),
    (1100, "ألف ومئة"),
    (2000, "ألفان"),  # dual
    (3000, "ثلاثة آلاف"),  # 3–10: genitive plural; ألف is masculine so ثلاثة takes ة
    (10000, "عشرة آلاف"),
    (11000, "أحد عشر ألفًا"),  # 11–99: accusative singular tamyiz
    (25000, "خمسة وعشرون ألفًا"),
    (100000, "مئة ألف"),  # مئة + genitive singular
    (200000, "مئتا ألف"),  # dual in idafa drops its nun
    (300000, "ثلاثمئة ألف"),
    (1000000, "مليون"),
    (2000000, "مليونان"),
    (5000000, "خمسة ملايين"),
    (13000000, "ثلاثة عشر مليونًا"),
    (1000000000, "مليار"),
    (2000000000, "ملياران"),
    (7000000000, "سبعة مليارات"),
    (10**12, "تريليون"),
    (3 * 10**12, "ثلاثة تريليونات"),
    (2025, "ألفان وخمسة وعشرون"),
    (1446, "ألف وأربعمئة وستة وأربعون"),
    (123456, "مئة وثلاثة وعشرون ألفًا وأربعمئة وستة وخمسون"),
    (1250000, "مليون ومئتان وخمسون ألفًا"),
]


@pytest.mark.parametrize("n, words", CARDINALS)
def test_cardinal_nominative_masculine(n, words):
    assert cardinal(n) == words


GENITIVE = [
    (2, "اثنين"),
    (12, "اثني عشر"),
    (20, "عشرين"),  # sound masculine plural pattern: -ين in genitive
    (22, "اثنين وعشرين"),
    (200, "مئتين"),
    (2000, "ألفين"),
    (2025, "ألفين وخمسة وعشرين"),
    (2000000, "مليونين"),
]


@pytest.mark.parametrize("n, words", GENITIVE)
def test_cardinal_genitive(n, words):
    assert cardinal(n, case="gen") == words


FEMININE = [  # agreement with a feminine counted noun
    (1, "واحدة"),
    (2, "اثنتان"),
    (3, "ثلاث"),  # reverse agreement: feminine noun → number without ة
    (8, "ثماني"),
    (11, "إحدى عشرة"),
    (12, "اثنتا عشرة"),
    (15, "خمس عشرة"),  # unit reverses, عشرة agrees
    (21, "إحدى وعشرون"),
    (23, "ثلاث وعشرون"),
]


@pytest.mark.parametrize("n, words", FEMININE)
def test_cardinal_feminine(n, words):
    assert cardinal(n, fem=True) == words


BOOK = lx.NOUN_FORMS["كتاب"]
CAR = lx.NOUN_FORMS["سيارة"]
COUNTS = [
    (BOOK, 1, "كتاب واحد"),  # noun first, واحد as an adjective
    (BOOK, 2, "كتابان"),  # the dual alone
    (BOOK, 3, "ثلاثة كتب"),  # masculine noun → ثلاثة, genitive plural
    (BOOK, 10, "عشرة كتب"),
    (BOOK, 11, "أحد عشر كتابًا"),  # accusative singular tamyiz
    (BOOK, 25, "خمسة وعشرون كتابًا"),
    (BOOK, 100, "مئة كتاب"),  # مئة + genitive singular
    (BOOK, 101, "مئة كتاب وكتاب"),  # «ألف ليلة وليلة» pattern
    (BOOK, 103, "مئة وثلاثة كتب"),  # last component decides: 3 → plural
    (BOOK, 111, "مئة وأحد عشر كتابًا"),
    (BOOK, 200, "مئتا كتاب"),
    (BOOK, 1000, "ألف كتاب"),
    (BOOK, 2000, "ألفا كتاب"),
    (BOOK, 3000, "ثلاثة آلاف كتاب"),
    (BOOK, 11000, "أحد عشر ألف كتاب"),  # tamyiz ألف in idafa loses its tanween
    (CAR, 1, "سيارة واحدة"),
    (CAR, 2, "سيارتان"),
    (CAR, 3, "ثلاث سيارات"),  # feminine noun → ثلاث
    (CAR, 11, "إحدى عشرة سيارةً"),
    (CAR, 12, "اثنتا عشرة سيارةً"),
    (CAR, 18, "ثماني عشرة سيارةً"),
    (CAR, 21, "إحدى وعشرون سيارةً"),
    (CAR, 1002, "ألف سيارة وسيارتان"),
    (lx.DAY, 5, "خمسة أيام"),
    (lx.HOUR, 5, "خمس ساعات"),
    (lx.MINUTE, 10, "عشر دقائق"),
    (THOUSAND, 1, "ألف واحد"),
]


@pytest.mark.parametrize("thing, n, words", COUNTS)
def test_count_agreement(thing, n, words):
    assert count(n, thing) == words


def test_count_genitive_dual_and_zero():
    assert count(2, BOOK, case="gen") == "كتابين"
    assert count(12, BOOK, case="gen") == "اثني عشر كتابًا"
    assert count(0, BOOK) == "صفر كتاب"


ORDINALS = [
    (1, False, "الأول"),
    (1, True, "الأولى"),
    (2, False, "الثاني"),
    (3, True, "الثالثة"),
    (10, False, "العاشر"),
    (11, False, "الحادي عشر"),
    (11, True, "الحادية عشرة"),
    (12, False, "الثاني عشر"),
    (15, True, "الخامسة عشرة"),
    (20, False, "العشرون"),
    (21, False, "الحادي والعشرون"),
    (25, True, "الخامسة والعشرون"),
    (100, False, "المئة"),
    (101, False, "الحادي بعد المئة"),
    (1000, False, "الألف"),
    (2025, False, "الخامس والعشرون بعد الألفين"),  # بعد governs the genitive
]


@pytest.mark.parametrize("n, fem, words", ORDINALS)
def test_ordinal(n, fem, words):
    assert ordinal(n, fem=fem) == words


@pytest.mark.parametrize("h, words", [(1, "الواحدة"), (3, "الثالثة"), (11, "الحادية عشرة"), (12, "الثانية عشرة")])
def test_hour_names_are_feminine_and_one_is_wahida(h, words):
    assert hour_name(h) == words


@pytest.mark.parametrize(
    "whole, frac, words",
    [
        ("3", "5", "ثلاثة فاصلة خمسة"),
        ("3", "25", "ثلاثة فاصلة خمسة وعشرون"),
        ("0", "05", "صفر فاصلة صفر خمسة"),  # leading zeros read one by one
        ("2", "50", "اثنان فاصلة خمسون"),
        ("3", "14159", "ثلاثة فاصلة واحد أربعة واحد خمسة تسعة"),  # > 3 digits: digit by digit
    ],
)
def test_decimal(whole, frac, words):
    assert decimal(whole, frac) == words


@pytest.mark.parametrize(
    "num, den, words",
    [(1, 2, "نصف"), (1, 4, "ربع"), (3, 4, "ثلاثة أرباع"), (2, 3, "ثلثان"), (1, 3, "ثلث"), (7, 8, "سبعة أثمان"),
     (3, 20, "ثلاثة على عشرين")],
)
def test_fraction(num, den, words):
    assert fraction(num, den) == words


def test_digits_and_adverbs():
    assert digits("0501") == "صفر خمسة صفر واحد"
    assert ordinal_adverb(1) == "أولًا" and ordinal_adverb(10) == "عاشرًا" and ordinal_adverb(11) is None


def test_cardinal_range_is_enforced():
    assert cardinal(MAX_CARDINAL).startswith("تسعمئة وتسعة وتسعون تريليونًا")
    with pytest.raises(ValueError):
        cardinal(MAX_CARDINAL + 1)
    with pytest.raises(ValueError):
        cardinal(-1)
