"""`PhrasePlanner`: a request's text -> the phrases T3 reads, each tokenized with SOT/EOT.

The text is cut into phrases (`text.segment.PhraseSegmenter`, exact consecutive slices of the
request), each is made what T3 reads (whitespace collapsed, Arabic through the text frontend and,
when asked, diacritized), and a phrase longer than `token_limit` after that is cut further
(`text.fit.split_to_fit`), so that any text is spoken."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from ..errors import ClientError, EngineError
from ..text.fit import TextTooLong, split_to_fit
from .stream import Phrase

__all__ = ["NothingToSay", "PhrasePlanner", "ENDINGS", "Spoken", "spoken_text"]

ENDINGS = tuple(".!?-,؟،؛。？！")  # the official pipeline ends every utterance with one of these


class NothingToSay(ClientError):
    """The text is empty after normalization (spaces, or only what the frontend drops)."""


@dataclass(frozen=True)
class Spoken:
    """What T3 reads for a phrase, with each character's source span [start, end) in the phrase."""

    text: str
    source: tuple[tuple[int, int], ...]

    def pieces(self, texts: list[str]) -> list["Spoken"]:
        """The maps of `texts`, consecutive pieces of this text in order (what `split_to_fit`
        cuts it into: words joined by single spaces, or parts of one word)."""
        out, pos = [], 0
        for t in texts:
            at = self.text.find(t, pos)
            if at < 0:
                raise EngineError(f"{t!r} is not a piece of {self.text!r} after position {pos}")
            out.append(Spoken(t, self.source[at:at + len(t)]))
            pos = at + len(t)
        return out


def _collapse_spaces(text: str) -> Spoken:
    """`" ".join(text.split())` with sources: a joining space stands for the whole run it replaced."""
    chars: list[str] = []
    source: list[tuple[int, int]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            j = i
            while j < n and text[j].isspace():
                j += 1
            if chars and j < n:
                chars.append(" ")
                source.append((i, j))
            i = j
        else:
            chars.append(text[i])
            source.append((i, i + 1))
            i += 1
    return Spoken("".join(chars), tuple(source))


def spoken_text(text: str, language: str, normalize: bool = True, diacritize: bool = False,
                frontend=None) -> Spoken:
    """What T3 reads for `text` (whitespace collapsed, Arabic through the text frontend and, when
    asked, diacritized), with each character's source span in `text`; text "" when nothing in it
    is spoken. The one definition: synthesis reads `.text`, word timestamps map back with `.source`."""
    if diacritize and language != "ar":
        raise ClientError(f"diacritization is for Arabic text, not language {language!r}")
    collapsed = _collapse_spaces(text)
    spoken = collapsed
    if (normalize or diacritize) and language == "ar":
        if frontend is None:
            from ..text.frontend import TextFrontend

            frontend = TextFrontend()
        st = frontend(collapsed.text, "ar", diacritize=diacritize)
        src = collapsed.source
        spoken = Spoken(st.text, tuple((src[a][0], src[b - 1][1]) for a, b in st.char_map))
    return spoken if spoken.text.strip() else Spoken("", ())


class PhrasePlanner:
    def __init__(self, tokenizer, t3_cfg, max_cache_len: int):
        self.tokenizer, self.cfg, self.max_cache_len = tokenizer, t3_cfg, max_cache_len
        self._lock = threading.Lock()
        self._frontend = None

    @property
    def token_limit(self) -> int:
        """Most text ids (SOT/EOT included) of one streamed phrase: T3's text positions, and no
        more than a third of a KV slot after the conditioning, so that two thirds stay for its
        speech (about two speech tokens per text token)."""
        return min(self.cfg.max_text_tokens + 2, (self.max_cache_len - self.cfg.len_cond) // 3)

    def frontend(self):
        """One Arabic frontend per engine: it keeps the diacritization model once loaded."""
        with self._lock:
            if self._frontend is None:
                from ..text.frontend import TextFrontend

                self._frontend = TextFrontend()
            return self._frontend

    def spoken_map(self, text: str, language: str, normalize: bool, diacritize: bool = False) -> Spoken:
        """`spoken_text` with this engine's frontend (its diacritization model stays loaded)."""
        frontend = self.frontend() if (normalize or diacritize) and language == "ar" else None
        return spoken_text(text, language, normalize, diacritize, frontend)

    def spoken(self, text: str, language: str, normalize: bool, diacritize: bool = False) -> str:
        """The text as T3 will read it; "" if nothing."""
        return self.spoken_map(text, language, normalize, diacritize).text

    def ids(self, spoken: str, language: str) -> torch.Tensor:
        if not spoken.endswith(ENDINGS):
            spoken += "."
        ids = self.tokenizer.encode(spoken, language)
        return torch.tensor([self.cfg.start_text, *ids, self.cfg.stop_text], dtype=torch.long)

    def utterance_ids(self, text: str, language: str, normalize: bool = True, diacritize: bool = False) -> torch.Tensor:
        """The ids of `text` spoken as one utterance; TextTooLong beyond T3's text positions."""
        spoken = self.spoken(text, language, normalize, diacritize)
        if not spoken:
            raise NothingToSay("nothing to say: the text is empty after normalization")
        ids = self.ids(spoken, language)
        limit = self.cfg.max_text_tokens + 2
        if len(ids) > limit:
            raise TextTooLong(f"the text is {len(ids)} text tokens after normalization; the model reads at most "
                              f"{limit} in one utterance (stream() splits longer text)")
        return ids

    def _fitted(self, spoken: Spoken, language: str) -> list[tuple[Spoken, torch.Tensor]]:
        limit, ids = self.token_limit, self.ids(spoken.text, language)
        if len(ids) <= limit:
            return [(spoken, ids)]
        pieces = spoken.pieces(split_to_fit(spoken.text, lambda t: len(self.ids(t, language)), limit))
        return [(piece, self.ids(piece.text, language)) for piece in pieces]

    def plan(self, text: str, language: str, normalize: bool = True, segment: bool = True,
             diacritize: bool = False) -> list[Phrase]:
        """The phrases of a request (`segment=False`: the text whole), each with its character map;
        errors surface here (`NothingToSay` when no phrase says anything)."""
        from ..text.segment import PhraseSegmenter

        if segment:
            seg = PhraseSegmenter()
            pieces = seg.feed(text) + seg.flush()
        else:
            pieces = [text]
        out, start = [], 0
        for piece in pieces:  # exact consecutive slices of `text` (PhraseSegmenter's contract)
            spoken = self.spoken_map(piece, language, normalize, diacritize)
            # a phrase of spaces only says nothing; one too long for the model is spoken as
            # several, each naming the slice it was cut from (and mapping into it)
            for part, ids in self._fitted(spoken, language) if spoken.text else ():
                out.append(Phrase(piece, start, ids, part))
            start += len(piece)
        if not out:
            raise NothingToSay("nothing to say: the text is empty after normalization")
        return out
