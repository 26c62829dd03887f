"""The text of an utterance as inference reads it, for validation and preparation.

`nutq.TTS.text_ids` collapses whitespace, runs the Arabic frontend on Arabic text, ends the text
with a full stop unless it already ends with punctuation, and encodes it with the multilingual
tokenizer (language tag first); T3 adds the start/stop text tokens. Training data must be read
the same way, or the model learns from text it never sees at inference: tests/train/data proves
these functions give `TTS.text_ids` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TextReader", "ReadText"]

_ENDINGS = tuple(".!?-,؟،؛。？！")  # the marks nutq.TTS accepts as an utterance's end


@dataclass(frozen=True)
class ReadText:
    text: str  # as T3 reads it ("" when nothing is left)
    ids: list[int]  # MTL ids, language tag first, no start/stop
    unknown: tuple[str, ...]  # characters the tokenizer cannot encode ([UNK] or dropped)


class TextReader:
    """Holds one frontend and one tokenizer; call it per utterance."""

    def __init__(self, tokenizer_file):
        from ...text.frontend import TextFrontend
        from ...text.tokenizer import MTLTokenizer

        self.tokenizer = MTLTokenizer.from_file(tokenizer_file)
        self._frontend = TextFrontend()

    def __call__(self, text: str, language: str = "ar") -> ReadText:
        spoken = " ".join(text.split())
        if language == "ar" and spoken:
            spoken = self._frontend(spoken, "ar").text
        if not spoken.strip():
            return ReadText("", [], ())
        if not spoken.endswith(_ENDINGS):
            spoken += "."
        enc = self.tokenizer.encode_checked(spoken, language)
        return ReadText(spoken, list(enc.ids), tuple(dict.fromkeys(c for _, c in enc.unknown)))
