"""Incremental phrase segmentation for streaming text (LLM tokens arrive a few characters at a time).

A phrase is emitted as soon as it is *safe*: the boundary after it can no longer turn out to be
something else. Boundaries:

* hard: ``. ! ? ؟`` (with closing quotes/brackets) followed by whitespace, and newlines. A period
  is not a boundary inside a number (3.5, 15.03.2025; the character after it decides, so a period
  at the end of the buffer waits for the next piece), after an abbreviation (د. م. أ. Dr. …, a
  single letter), or after a list number at the start of a line (1. …);
* soft: ``، , ؛ ; :`` and ellipses followed by whitespace. They end the *first* phrase of a turn once
  it is at least `first_min_chars` long (a short first phrase means earlier first audio), and any
  phrase once the buffer is longer than `soft_cut_chars`;
* length: past `max_chars` the phrase is cut at the last space (or hard, without one).

Phrases are exact slices of the input, so concatenating everything emitted reproduces the input;
the whitespace after a boundary starts the next phrase. The only exception: whitespace left over
at `flush()` with nothing after it is not emitted as a phrase of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOUNDARY = re.compile(r"\n|(?:\.{3,}|…)+[\"'”»)\]]*|[.!?؟]+[\"'”»)\]]*|[،,؛;:]")
_WORD_BEFORE = re.compile(r"(\S+)$")
# Abbreviations that end in a period: Arabic titles and address parts, common Latin ones.
ABBREVIATIONS = frozenset({
    "د", "م", "أ", "ا", "ص", "ب", "ت", "ج", "ش", "ق", "ص.ب", "أ.د", "م.م", "ه", "هـ",
    "Dr", "Mr", "Mrs", "Ms", "Prof", "St", "No", "vs", "etc", "e.g", "i.e", "Jr", "Sr", "Inc", "Ltd",
})


@dataclass(frozen=True, slots=True)
class SegmenterConfig:
    """first_min_chars: shortest first phrase that a soft boundary may end (0 disables soft cuts
    for the first phrase). soft_cut_chars: buffer length beyond which soft boundaries cut any
    phrase. max_chars: longest phrase; cut at the last space before it."""

    first_min_chars: int = 12
    soft_cut_chars: int = 120
    max_chars: int = 250

    def __post_init__(self) -> None:
        if not 0 < self.max_chars or self.soft_cut_chars > self.max_chars:
            raise ValueError("need 0 < max_chars and soft_cut_chars <= max_chars")


class PhraseSegmenter:
    """feed(piece) → phrases ready to speak; flush() → the rest (end of the turn)."""

    def __init__(self, config: SegmenterConfig | None = None) -> None:
        self.config = config or SegmenterConfig()
        self._buf = ""
        self._emitted_in_turn = 0

    def reset(self) -> None:
        self._buf = ""
        self._emitted_in_turn = 0

    @property
    def pending(self) -> str:
        """Text received but not yet emitted."""
        return self._buf

    def feed(self, piece: str) -> list[str]:
        self._buf += piece
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """Emit everything buffered; the next feed starts a new turn."""
        out = self._drain(final=True)
        if self._buf.strip():
            out.append(self._buf)
        self._buf = ""
        self._emitted_in_turn = 0
        return out

    # -- internals ------------------------------------------------------------------------------

    def _drain(self, final: bool) -> list[str]:
        out = []
        while True:
            cut = self._find_cut(self._buf, final)
            if cut is None:
                return out
            phrase, self._buf = self._buf[:cut], self._buf[cut:]
            out.append(phrase)
            self._emitted_in_turn += 1

    def _find_cut(self, b: str, final: bool) -> int | None:
        cfg = self.config
        cut = self._boundary(b, final)
        if cut is not None and cut <= cfg.max_chars:
            return cut
        if len(b) > cfg.max_chars:  # no boundary soon enough: cut at the last space
            space = b.rfind(" ", 0, cfg.max_chars + 1)
            return space if space > 0 and b[:space].strip() else cfg.max_chars
        return None

    def _boundary(self, b: str, final: bool) -> int | None:
        cfg = self.config
        first = self._emitted_in_turn == 0
        last_soft = None
        n = len(b)
        for m in _BOUNDARY.finditer(b):
            a, e = m.span()
            tok = m.group()
            if tok == "\n":
                if b[:a].strip():
                    return a
                continue
            if e >= n and not final:
                break  # the next character decides (3. vs 3.5, "?" vs '?"')
            if e < n and not b[e].isspace():
                continue  # 3.5, 1,000, 10:30, ص.ب, example.com
            if not b[:e].strip():
                continue
            soft = tok[0] in "،,؛;:" or tok.startswith(("..", "…"))
            if not soft and tok[0] == "." and self._guarded(b, a):
                continue
            if not soft:
                return e
            if first and cfg.first_min_chars and len(b[:e].strip()) >= cfg.first_min_chars:
                return e
            last_soft = e
        if last_soft is not None and n > cfg.soft_cut_chars:
            return last_soft
        return None

    @staticmethod
    def _guarded(b: str, dot: int) -> bool:
        """Is the period at `dot` part of an abbreviation or a list number, not a sentence end?"""
        m = _WORD_BEFORE.search(b, 0, dot)
        if not m:
            return False
        word = m.group(1).lstrip("(\"'«")
        if word in ABBREVIATIONS:
            # "عام 2025 م." / "1446 هـ." end a sentence: after a number these are year suffixes.
            before = b[:m.start()].rstrip().rsplit(" ", 1)[-1]
            return not (word in ("م", "ه", "هـ") and before[-1:].isdigit())
        if word[-1:] in ("م", "ه", "ـ") and word[:1].isdigit():
            return False
        line_start = b.rfind("\n", 0, m.start()) + 1
        return word.isdigit() and len(word) <= 2 and not b[line_start:m.start()].strip()
