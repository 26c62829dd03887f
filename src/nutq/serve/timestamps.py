"""Word timestamps, in the user's own text, from the alignment guard's position.

Two steps per phrase:

1. `spoken_text` + `phrase_words`: which text tokens belong to which word of the phrase as the user
   wrote it. The chain back is: text token -> characters of the spoken text (the tokenizer's
   offsets) -> characters of the whitespace-collapsed phrase (the frontend's `char_map`: a number
   read out as words maps every letter to its digits) -> characters of the phrase. A word is a
   whitespace-delimited run of the phrase; words that produce no token (an emoji, a lone dash) get
   no timestamp.
2. `WordTimer`: when. Each audio chunk carries the guard's text position (an index into the
   phrase's ids; SOT = 0) at the moment the chunk was cut. That moment is `lead_s` of audio ahead
   of the chunk's end, because streaming token2wav holds back its look-ahead tokens. The points
   (audio time, position), made non-decreasing and joined linearly, say when each token was
   reached; a word lasts from reaching its first token to reaching the token after it. The end of
   the phrase's audio is pinned to the end of its text.

Precision: the position is sampled once per chunk (chunks grow to ~1 s) and is the argmax of a few
attention heads, so a word's time is an interpolation between chunk boundaries, good to a few
hundred ms, not a forced alignment. Without a guard the position stays 0 and the words are spread
over the phrase's audio in proportion to their tokens.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from ..engine.phrases import Spoken, spoken_text

__all__ = ["Spoken", "Word", "TimedWord", "WordTimer", "spoken_text", "phrase_words", "DEFAULT_LEAD_S"]

# Streaming token2wav releases a chunk once 7 more tokens exist (flow look-ahead 3 tokens + 8 held-back
# mel frames = 4 tokens; see engine.chunking), 40 ms each: the guard's position at the cut belongs 280 ms
# past the chunk's last sample.
DEFAULT_LEAD_S = 7 * 0.040
FIRST_TEXT_TOKEN = 2  # phrase ids are [SOT, language tag, text tokens..., EOT]


@dataclass(frozen=True)
class Word:
    text: str  # a slice of the phrase, as the user wrote it
    start: int  # character offsets in the phrase
    end: int
    first_token: int  # index into the phrase's ids of its first token
    end_token: int  # one past its last token


@dataclass(frozen=True)
class TimedWord:
    word: Word
    start_s: float  # seconds of audio
    end_s: float


def _words_of(text: str) -> list[tuple[int, int]]:
    out, i, n = [], 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        j = i
        while j < n and not text[j].isspace():
            j += 1
        out.append((i, j))
        i = j
    return out


def phrase_words(phrase: str, spoken: Spoken, ids: list[int], tokenizer, language: str) -> list[Word] | None:
    """The words of `phrase` with the ids they were read as, or None when `ids` (the engine's
    [SOT, tag, ..., EOT]) is not what `spoken` encodes to: then nothing can be attributed reliably."""
    inner = list(ids[1:-1])
    # The engine ends an utterance without final punctuation with "." (as the official pipeline);
    # rather than restate its rule, try both and keep the one that reproduces its ids.
    for candidate in (spoken.text, spoken.text + "."):
        tok_ids, spans = tokenizer.encode_spans(candidate, language)
        if tok_ids == inner:
            break
    else:
        return None
    words = _words_of(phrase)
    starts = [a for a, _ in words]
    hits: list[tuple[int, int, int]] = []  # (ids index, first word, last word) per token read from words
    for k, (a, b) in enumerate(spans):
        if b <= a or a >= len(spoken.text) or spoken.text[a:b].isspace():
            continue  # the language tag, the added final ".", or [SPACE] (its source may be anything dropped)
        src = spoken.source[a:b]
        s, e = min(x for x, _ in src), max(y for _, y in src)
        lo = max(bisect.bisect_right(starts, s) - 1, 0)
        if words and words[lo][1] <= s:  # starts between words (a joining space)
            lo += 1
        hi = bisect.bisect_left(starts, e) - 1
        if lo <= hi:
            hits.append((k + 1, lo, hi))  # ids index: SOT comes before the encoder's ids
    # A token read from several words ties them into one timed unit: "25 كتابا" is read as one
    # phrase ("خمسة وعشرون كتابًا") whose letters all come from both words.
    joined = [False] * len(words)
    for _, lo, hi in hits:
        for w in range(lo, hi):
            joined[w] = True
    group = []
    g = 0
    for w in range(len(words)):
        group.append(g)
        if not joined[w]:
            g += 1
    first: dict[int, tuple[int, int]] = {}  # group -> (first token, last token)
    for pos, lo, _ in hits:
        f, l = first.get(group[lo], (pos, pos))
        first[group[lo]] = (min(f, pos), max(l, pos))
    out = []
    for gi in sorted(first):
        members = [w for w in range(len(words)) if group[w] == gi]
        a, b = words[members[0]][0], words[members[-1]][1]
        out.append(Word(phrase[a:b], a, b, first[gi][0], first[gi][1] + 1))
    return out


class WordTimer:
    """Times one phrase's words as its chunks arrive: `chunk()` per chunk, `finish()` at its end;
    each returns the words whose timing just became known, in order, each exactly once."""

    def __init__(self, words: list[Word], n_ids: int, t0: float, lead_s: float = DEFAULT_LEAD_S):
        if n_ids < FIRST_TEXT_TOKEN + 1:
            raise ValueError(f"a phrase has at least {FIRST_TEXT_TOKEN + 1} ids, got {n_ids}")
        self.words, self.lead_s = words, lead_s
        self._last = n_ids - 1  # EOT
        self._points = [(t0, FIRST_TEXT_TOKEN)]  # (seconds, position): the first text token at the first sample
        self._next = 0
        self._prev_start = self._prev_end = t0

    def chunk(self, t_end: float, position: int) -> list[TimedWord]:
        """A chunk whose audio ends at `t_end` was cut with the guard at `position`."""
        if position < FIRST_TEXT_TOKEN:
            # Where the guard starts, and where it stays without one: says nothing about time.
            return []
        t_prev, p_prev = self._points[-1]
        p = min(max(position, p_prev), self._last)  # the position never goes back (nor past EOT)
        self._points.append((max(t_end + self.lead_s, t_prev), p))
        return self._emit(p, None)

    def finish(self, t_end: float) -> list[TimedWord]:
        """The phrase's audio ended at `t_end`: every word left, the text read by then."""
        t_prev, _ = self._points[-1]
        self._points.append((max(t_end, t_prev), self._last))
        # The lead is an estimate: no word past the last sample, unless one already sent is.
        return self._emit(self._last, max(t_end, self._prev_end))

    def _reach(self, x: int) -> float:
        """When the (piecewise linear, non-decreasing) position first reached `x`."""
        pts = self._points
        for i, (t, p) in enumerate(pts):
            if p >= x:
                if i == 0:
                    return t
                t0, p0 = pts[i - 1]
                return t0 + (t - t0) * (x - p0) / (p - p0)
        raise AssertionError(f"position {x} not reached yet")  # _emit only asks for reached ones

    def _emit(self, reached: int, t_cap: float | None) -> list[TimedWord]:
        out = []
        while self._next < len(self.words) and self.words[self._next].end_token <= reached:
            w = self.words[self._next]
            start = max(self._reach(w.first_token), self._prev_start)
            end = max(self._reach(w.end_token), start, self._prev_end)
            if t_cap is not None:
                start, end = min(start, t_cap), min(end, t_cap)
            out.append(TimedWord(w, start, end))
            self._prev_start, self._prev_end = start, end
            self._next += 1
        return out
