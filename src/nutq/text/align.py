"""A string that remembers, for every character, where it came from in the original text.

Every frontend stage rewrites text (numbers become words, decoration disappears, letters are
mapped). The engine reports word timestamps in the *user's* text, so each spoken character must
point back at a span of the original. `Aligned` carries one half-open span ``[start, end)`` per
character; a rewrite gives every character of a replacement the span covering what it replaced.
Characters that are kept keep their span, characters that are removed simply vanish.

Spans are stored as two parallel int lists instead of a list of tuples: the stages copy slices of
them many times per sentence and flat int lists are the cheapest thing Python can slice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# A replacement returned by a rewrite callback: pieces of new text, each tied to the range
# [a, b) of the *current* text it stands for. The rewrite consumes from the match start up to the
# largest b (so a callback may look past its match, e.g. to swallow a counted noun).
Piece = tuple[str, int, int]
Rewrite = str | Sequence[Piece] | None


@dataclass(slots=True)
class Aligned:
    text: str
    starts: list[int]
    ends: list[int]

    @classmethod
    def of(cls, text: str) -> Aligned:
        n = len(text)
        return cls(text, list(range(n)), list(range(1, n + 1)))

    def span(self, a: int, b: int) -> tuple[int, int]:
        """Original span covered by current characters [a, b); an empty range borrows a neighbour."""
        n = len(self.text)
        if b > a:
            return self.starts[a], self.ends[b - 1]
        if n == 0:
            return 0, 0
        # A pure insertion is attributed to the character before it (or after it at the start),
        # so it still points inside the original text.
        i = a - 1 if a > 0 else 0
        i = min(i, n - 1)
        return self.starts[i], self.ends[i]

    def rewrite(self, pattern: re.Pattern[str], fn: Callable[[re.Match[str], str], Rewrite]) -> Aligned:
        """Apply `fn` to each non-overlapping match; returns self unchanged when nothing matched.

        `fn(match, text)` returns None (keep the match), a string (replace the match), or a list of
        pieces (see `Piece`) for finer-grained alignment or to consume text past the match.
        """
        text = self.text
        out: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        pos = 0  # end of the text already copied or consumed
        search = 0
        changed = False
        while (m := pattern.search(text, search)) is not None:
            # Searching again from the end of each replacement (rather than iterating over all
            # matches up front) lets a match that overlapped consumed text be found anew.
            search = m.end() if m.end() > m.start() else m.start() + 1
            rep = fn(m, text)
            if rep is None:
                continue
            changed = True
            a = m.start()
            pieces: Sequence[Piece] = [(rep, a, m.end())] if isinstance(rep, str) else rep
            out.append(text[pos:a])
            starts.extend(self.starts[pos:a])
            ends.extend(self.ends[pos:a])
            end = m.end()
            for piece, pa, pb in pieces:
                s, e = self.span(pa, pb)
                out.append(piece)
                starts.extend([s] * len(piece))
                ends.extend([e] * len(piece))
                end = max(end, pb)
            pos = end
            search = max(search, end)
        if not changed:
            return self
        out.append(text[pos:])
        starts.extend(self.starts[pos:])
        ends.extend(self.ends[pos:])
        return Aligned("".join(out), starts, ends)

    def map_chars(self, fn: Callable[[int, str], str | None]) -> Aligned:
        """Per-character rewrite: fn(index, char) -> None keeps it, a string replaces it."""
        out: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        changed = False
        text = self.text
        for i, ch in enumerate(text):
            rep = fn(i, ch)
            if rep is None:
                out.append(ch)
                starts.append(self.starts[i])
                ends.append(self.ends[i])
                continue
            changed = True
            out.append(rep)
            starts.extend([self.starts[i]] * len(rep))
            ends.extend([self.ends[i]] * len(rep))
        if not changed:
            return self
        return Aligned("".join(out), starts, ends)
