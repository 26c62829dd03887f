"""MTLTokenizer: exact ids of the official tokenizer, plus unknown-character reporting.

Golden ids come from tools/parity/tokenizer.py (official chatterbox-tts 0.1.7 MTLTokenizer on the
real vocabulary). Ids are integers, so the only acceptable tolerance is none.
"""

from __future__ import annotations

import pytest

from tests.conftest import load_golden
from nutq.text.tokenizer import (
    COMMON_PATH_ONLY,
    SUPPORTED_LANGUAGES,
    MTLTokenizer,
    UnknownCharactersError,
)


@pytest.fixture(scope="module")
def tok(vocab_path) -> MTLTokenizer:
    return MTLTokenizer.from_file(vocab_path)


@pytest.fixture(scope="module")
def golden():
    return load_golden("tokenizer")


def test_ids_equal_official_for_every_sentence(tok, golden):
    tensors, meta = golden
    assert len(meta["sentences"]) >= 40
    mismatches = []
    for i, (lang, text) in enumerate(zip(meta["languages"], meta["sentences"])):
        want = tensors[f"out.ids.{i}"].tolist()
        got = tok.encode(text, lang)
        if got != want:
            mismatches.append(f"[{lang}] {text!r}: nutq {got} != official {want}")
    assert not mismatches, "\n".join(mismatches)


def test_golden_covers_the_arabic_cases_that_matter(golden):
    _, meta = golden
    arabic = "".join(t for lang, t in zip(meta["languages"], meta["sentences"]) if lang == "ar")
    for ch in "أإآؤئء،؛؟٠١٩" + "\u064e\u064f\u0650\u0651\u0652\u064b\u0670":
        assert ch in arabic, f"parity table lacks {ch!r} (U+{ord(ch):04X})"
    assert {"en", "fr", "de", "el", "ru", "ko", "hi"} <= set(meta["languages"])


def test_decode_equals_official(tok, golden):
    tensors, meta = golden
    for i, want in enumerate(meta["decoded"]):
        assert tok.decode(tensors[f"out.ids.{i}"]) == want, meta["sentences"][i]


def test_special_ids_and_sizes(tok):
    assert (tok.sot_id, tok.eot_id, tok.unk_id, tok.space_id) == (255, 0, 1, 2)
    assert tok.vocab_size == 2454
    assert tok.language_id("ar") == 721
    assert tok.supported_languages == tuple(sorted(SUPPORTED_LANGUAGES))
    assert len(tok.supported_languages) == 23
    assert COMMON_PATH_ONLY <= set(SUPPORTED_LANGUAGES)


def test_arabic_hamza_decomposes_to_alef_plus_hamza_mark(tok):
    # NFKD: أ -> ا + U+0654; the id sequence must therefore equal that of the decomposed text.
    assert tok.encode("أ", "ar") == tok.encode("\u0627\u0654", "ar")
    assert tok.encode("أ", "ar")[1:] == [tok._tok.token_to_id("\u0627"), tok._tok.token_to_id("\u0654")]


def test_language_is_case_insensitive_and_unknown_language_is_named(tok):
    assert tok.encode("مرحبا", "AR") == tok.encode("مرحبا", "ar")
    with pytest.raises(ValueError, match=r"unsupported language 'xx'.*ar, da, de"):
        tok.encode("hello", "xx")
    with pytest.raises(ValueError, match="unsupported language 'sk'"):
        tok.encode("ahoj", "sk")  # tag is in the vocab, but not an official language


def test_unknown_characters_are_reported_with_input_positions(tok):
    text = "أهلاً 😀\tبك"  # hamza and tanween expand under NFKD; indices still refer to `text`
    enc = tok.encode_checked(text, "ar")
    assert enc.unknown == [(6, "😀"), (7, "\t")]
    assert text[6] == "😀" and text[7] == "\t"
    assert enc.ids == tok.encode(text, "ar")
    assert enc.ids.count(tok.unk_id) == 1  # the emoji; the tab is dropped by the pre-tokenizer
    assert not enc.ok


def test_clean_text_has_no_unknowns(tok):
    enc = tok.encode_checked("ذَهَبَ الوَلَدُ إِلَى المَدْرَسَةِ، صَبَاحًا؟ ٢٥", "ar")
    assert enc.ok and enc.unknown == []
    assert tok.unk_id not in enc.ids


def test_strict_mode_raises_naming_the_characters(tok):
    with pytest.raises(UnknownCharactersError, match=r"'😀' \(U\+1F600\) at 6") as err:
        tok.encode("مرحبا 😀", "ar", strict=True)
    assert err.value.unknown == [(6, "😀")]
    assert isinstance(err.value, ValueError)
    assert tok.encode("مرحبا", "ar", strict=True) == tok.encode("مرحبا", "ar")


def test_only_unknown_characters(tok):
    assert tok.encode("😀😀", "ar") == [721, 1, 1]
    assert [c for _, c in tok.encode_checked("😀😀", "ar").unknown] == ["😀", "😀"]
    with pytest.raises(UnknownCharactersError):
        tok.encode("😀😀", "ar", strict=True)


def test_empty_text_gives_the_tag_only_and_strict_refuses(tok):
    assert tok.encode("", "ar") == [721]
    with pytest.raises(ValueError, match="empty"):
        tok.encode("", "ar", strict=True)
    with pytest.raises(ValueError, match="empty"):
        tok.encode("   ", "ko", strict=True)  # Korean strips, leaving nothing


def test_korean_strip_keeps_unknown_indices_on_the_input(tok):
    enc = tok.encode_checked("  안녕 😀 ", "ko")
    assert enc.text == enc.text.strip()
    assert enc.unknown == [(5, "😀")]


def test_unsupported_script_in_chinese_is_reported_not_dropped(tok):
    # zh gets only the common path (no Cangjie): Han characters must surface as unknown.
    enc = tok.encode_checked("你好", "zh")
    assert [c for _, c in enc.unknown] == ["你", "好"]


@pytest.mark.slow
@pytest.mark.refenv
def test_golden_is_what_the_official_tokenizer_gives_today(tmp_path, tok):
    # Re-runs the generator against the installed official package so a stale fixture shows up.
    from tests.conftest import run_generator

    out = tmp_path / "tokenizer.safetensors"
    tensors, meta = run_generator("tokenizer.py", out)
    fresh = {k: v.tolist() for k, v in tensors.items()}
    for i, (lang, text) in enumerate(zip(meta["languages"], meta["sentences"])):
        assert tok.encode(text, lang) == fresh[f"out.ids.{i}"], (lang, text)
