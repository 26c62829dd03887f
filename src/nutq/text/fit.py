"""`split_to_fit`: cut text the model cannot read at once into consecutive pieces that it can.

T3 has a fixed number of learned text positions, and the frontend can expand a short text far past
them (a ligature such as "ﷺ" becomes four words, a run of digits becomes number words). A phrase
whose tokens do not fit is cut at spaces, into as many whole words per piece as fit; a single word
that does not fit alone is cut between characters. Token counts come from the real tokenizer
(`count`), so a piece that is accepted is one the model can read.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ClientError

__all__ = ["split_to_fit", "TextTooLong"]


class TextTooLong(ClientError):
    """Even one character is more tokens than the model reads at once."""


def _longest_prefix(units: list[str], sep: str, fits: Callable[[str], bool]) -> int:
    """The most leading `units` that joined by `sep` still fit (0 if not even one). Token counts
    grow with the text, so a binary search finds it with O(log n) tokenizations."""
    lo, hi = 0, len(units)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(sep.join(units[:mid])):
            lo = mid
        else:
            hi = mid - 1
    return lo


def split_to_fit(text: str, count: Callable[[str], int], budget: int) -> list[str]:
    """`text` itself when `count(text) <= budget`, else pieces (words joined by single spaces,
    or parts of one word) that each fit. Raises `TextTooLong` naming the budget if a single
    character does not fit."""
    fits = lambda piece: count(piece) <= budget  # noqa: E731
    if fits(text):
        return [text]
    words, out = text.split(), []
    while words:
        n = _longest_prefix(words, " ", fits)
        if n:
            out.append(" ".join(words[:n]))
            words = words[n:]
            continue
        chars = list(words[0])  # one word alone is too long: cut it between characters
        n = _longest_prefix(chars, "", fits)
        if n == 0:
            raise TextTooLong(f"{chars[0]!r} alone is {count(chars[0])} text tokens; the model reads at most "
                              f"{budget} at once")
        out.append("".join(chars[:n]))
        words[0] = "".join(chars[n:])
    return out
