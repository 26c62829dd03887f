"""Vocabulary awareness against the real multilingual tokenizer file (the copy in src/nutq/assets)."""

import unicodedata

import pytest

from nutq.text.frontend import TextFrontend, normalize_text
from nutq.text.vocab import VocabCharset, load_vocab_charset


@pytest.fixture(scope="module")
def charset(vocab_path):
    return load_vocab_charset(vocab_path)


def test_real_vocab_covers_arabic_letters_harakat_digits_and_arabic_punctuation(charset):
    for ch in "ابتثجحخدذرزسشصضطظعغفقكلمنهويءةى" + "ًٌٍَُِّْ" + "٠١٢٣٤٥٦٧٨٩" + "،؛؟" + " ":
        assert charset.encodable(ch), f"{ch!r} U+{ord(ch):04X} should be encodable"


def test_hamza_letters_are_checked_after_nfkd(charset):
    # أ decomposes to ا + U+0654 under NFKD, which is what the encoder looks up.
    assert unicodedata.normalize("NFKD", "أ") == "ا\u0654"
    assert charset.encodable("أ") and charset.encodable("إ") and charset.encodable("آ")


def test_every_spoken_character_of_a_realistic_text_is_encodable(charset):
    text = "**تنبيه:** سعر 📱 iPhone 15 هو 4,999 ريال (خصم 10٪) — اتصل على 0501234567 «الآن»!"
    r = normalize_text(text, vocab=charset)
    assert all(ch == " " or charset.encodable(ch) for ch in r.text), r.text


def test_unencodable_characters_are_mapped_or_dropped_and_counted(charset):
    assert not charset.encodable("中") and not charset.encodable("ݐ")
    r = TextFrontend(vocab=charset)("كلمة ݐ و中 نهاية")
    # ݐ (ARABIC LETTER BEH WITH THREE DOTS…) → its base letter ب; 中 has no equivalent → dropped.
    assert r.text == "كلمة ب و نهاية"
    assert dict(r.mapped) == {"ݐ": 1} and dict(r.dropped) == {"中": 1}


def test_charset_from_any_iterable_treats_space_token_as_space():
    cs = VocabCharset.of(["[SPACE]", "ا", "ب", "th"])
    assert cs.encodable(" ") and cs.encodable("ا") and not cs.encodable("t")
    r = normalize_text("اب جد", vocab=["ا", "ب", "[SPACE]"])
    assert r.text == "اب" and dict(r.dropped) == {"ج": 1, "د": 1}


def test_load_rejects_a_json_without_model_vocab(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"model": {}}')
    with pytest.raises(ValueError, match="model.vocab"):
        load_vocab_charset(p)
