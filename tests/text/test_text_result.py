"""The result object: alignment back to the original, Latin spans, dropped/mapped counts."""

import json

import pytest

from nutq.text.frontend import SpokenText, normalize_text


def test_char_map_points_each_number_word_at_its_digits():
    original = "دفعت 25 ريالا اليوم"
    r = normalize_text(original)
    assert r.text == "دفعت خمسة وعشرون ريالًا اليوم"
    assert len(r.char_map) == len(r.text)
    words = r.words()
    # The verbalised number and its counted noun both map to "25 ريالا" (they were read together).
    assert [original[s:e] for _, s, e in words] == ["دفعت", "25 ريالا", "25 ريالا", "25 ريالا", "اليوم"]


def test_untouched_characters_map_one_to_one():
    original = "مرحـبا بكم"  # the tatweel disappears, every other letter keeps its own index
    r = normalize_text(original)
    assert r.text == "مرحبا بكم"
    assert r.char_map[3] == (4, 5)  # ب after the removed tatweel at index 3
    assert r.original_span(0, 5) == (0, 6)


def test_date_pieces_map_to_their_own_fields():
    original = "15/03/2025"
    r = normalize_text(original)
    i = r.text.index("مارس")
    assert r.original_span(i, i + 4) == (3, 5)  # the month word comes from "03"
    j = r.text.index("ألفين")
    assert original[slice(*r.original_span(j, j + 5))] == "2025"


def test_original_span_rejects_ranges_outside_the_spoken_text():
    r = normalize_text("نعم")
    with pytest.raises(IndexError):
        r.original_span(0, 10)


def test_latin_spans_report_runs_with_word_counts():
    original = "قال المدير: we will launch next week إن شاء الله"
    r = normalize_text(original)
    assert len(r.latin_spans) == 1
    span = r.latin_spans[0]
    assert span.text == "we will launch next week" and span.words == 5
    assert r.text[span.start:span.end] == span.text
    assert original[span.orig_start:span.orig_end] == span.text


def test_dropped_and_mapped_characters_are_counted():
    r = normalize_text("علی\u200f الطاولة 😀😀 مرحـبا")
    assert dict(r.dropped) == {"\u200f": 1, "😀": 2, "ـ": 1}
    assert dict(r.mapped) == {"ی": 1}
    assert r.n_dropped == 4 and r.n_mapped == 1


def test_result_is_frozen_and_serialises_to_json():
    r = normalize_text("السعر 5% فقط")
    assert isinstance(r, SpokenText)
    with pytest.raises(AttributeError):
        r.text = "x"  # type: ignore[misc]
    d = json.loads(json.dumps(r.to_dict(), ensure_ascii=False))
    assert d["text"] == "السعر خمسة بالمئة فقط" and len(d["char_map"]) == len(d["text"])


def test_unsupported_language_is_an_error():
    with pytest.raises(ValueError, match="reads"):
        normalize_text("hello", lang="en")
