"""`diacritize=True` on the TTS and the OpenAI endpoint: the text T3 reads gains harakat, and a
server without the optional diacritizer refuses the option clearly instead of ignoring it."""

from __future__ import annotations

import pytest

from nutq.text.diacritize import DiacritizerUnavailable
from nutq.text.frontend import TextFrontend
from nutq.tts import TTS

FATHA = "\u064e"


def fatha_everywhere(text: str) -> str:
    """A stand-in diacritizer: a fatha after every Arabic letter (the model is an optional extra)."""
    return "".join(c + FATHA if "\u0621" <= c <= "\u064a" else c for c in text)


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint)


def test_diacritized_phrases_read_the_marked_text(tts):
    tts.planner._frontend = TextFrontend(_diacritizer=fatha_everywhere)
    try:
        plain = tts.phrases("مرحبا بكم", segment=False)[0].ids
        marked = tts.phrases("مرحبا بكم", segment=False, diacritize=True)[0].ids
        by_hand = tts.phrases(fatha_everywhere("مرحبا بكم"), segment=False)[0].ids
    finally:
        tts.planner._frontend = None
    assert marked.tolist() == by_hand.tolist() != plain.tolist()


def test_diacritize_is_arabic_only(tts):
    with pytest.raises(ValueError, match="Arabic"):
        tts.phrases("hello there", language="en", diacritize=True)


def test_missing_diacritizer_is_a_clear_error_not_a_silent_skip(tts, monkeypatch):
    def unavailable(model):
        raise DiacritizerUnavailable("needs text2tashkeel")

    monkeypatch.setattr("nutq.text.frontend.load_diacritizer", unavailable)
    tts.planner._frontend = None
    with pytest.raises(DiacritizerUnavailable):
        tts.stream("مرحبا بكم", diacritize=True)
    pytest.importorskip("fastapi")
    from nutq.serve.errors import api_error_from

    err = api_error_from(DiacritizerUnavailable("needs text2tashkeel"))
    assert err.status == 400 and err.param == "diacritize" and err.code == "unsupported_option"
