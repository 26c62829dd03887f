"""Diacritization: merging rules (always tested, with a stand-in backend) and the real backend
(skipped when the optional text2tashkeel package is not installed)."""

import pytest

from nutq.text import diacritize as dz
from nutq.text.frontend import FrontendConfig, TextFrontend


def fake_backend(text: str) -> str:
    """A deterministic stand-in: fatha on every Arabic letter, hamza restored on a bare alef."""
    out = []
    for ch in text:
        out.append("أ" if ch == "ا" else ch)
        if "\u0621" <= ch <= "\u064a":
            out.append("\u064e")
    return "".join(out)


def test_existing_harakat_are_never_overwritten():
    merged = dz.merge_marks("كُتب", fake_backend("كتب"))
    # ك keeps its damma; ت and ب receive the backend's fatha.
    assert merged == [("ك", "\u064f"), ("ت", "\u064e"), ("ب", "\u064e")]


def test_letters_are_never_changed_only_marks_added():
    merged = dz.merge_marks("اب", fake_backend("اب"))
    assert [b for b, _ in merged] == ["ا", "ب"]  # the backend's hamza on alef is not applied
    assert all(m == "\u064e" for _, m in merged)


def test_misaligned_backend_output_only_marks_the_matching_letters():
    merged = dz.merge_marks("سلام عليكم", "سَلَامٌ")  # backend dropped a word
    assert "".join(b + m for b, m in merged) == "سَلَامٌ عليكم"


def test_frontend_uses_the_diacritizer_and_keeps_alignment():
    fe = TextFrontend(_diacritizer=fake_backend)
    r = fe("كتب 3", diacritize=True)
    assert r.diacritized
    assert r.text == "كَتَبَ ثَلَاَثَةَ"  # the stand-in marks every letter, alef included
    assert len(r.char_map) == len(r.text)
    assert r.char_map[1] == (0, 1)  # the fatha after ك points at ك


def test_missing_backend_raises_a_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_t2t(name, *args, **kwargs):
        if name == "text2tashkeel":
            raise ImportError("not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_t2t)
    with pytest.raises(dz.DiacritizerUnavailable, match="text2tashkeel"):
        TextFrontend()("كتب", diacritize=True)


def test_diacritization_is_off_by_default():
    r = TextFrontend(_diacritizer=fake_backend)("كتب")
    assert r.text == "كتب" and not r.diacritized


def test_real_text2tashkeel_backend():
    pytest.importorskip("text2tashkeel")
    pytest.importorskip("onnxruntime")
    fe = TextFrontend(FrontendConfig(diacritizer_model=dz.DEFAULT_MODEL))
    r = fe("ذهب الطالب إلى المدرسة", diacritize=True)
    bare = "".join(c for c in r.text if not dz.is_mark(c))
    assert bare == "ذهب الطالب إلى المدرسة"  # letters untouched
    assert sum(dz.is_mark(c) for c in r.text) >= 8  # and most letters vocalised
    kept = fe("كُتب", diacritize=True).text
    assert kept.startswith("كُ")  # the input damma survives
