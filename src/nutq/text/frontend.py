"""The Arabic text frontend: raw text in, speakable text plus its alignment out.

Stages, in order (each a small function of an `Aligned` string):

1. character clean-up (format characters, tatweel, emoji, presentation forms, digits → ASCII);
2. markdown/LLM decoration removed (links → their text, lists, tables, headings);
3. Persian/Urdu letter forms inside Arabic words mapped to Arabic letters; title abbreviations
   (د. م. أ. ص.ب) expanded;
4. numbers and quantities verbalised in MSA (`quantities`);
5. Latin acronyms and units read in Arabic (`latin`);
6. optional diacritization (never overwriting existing harakat);
7. characters the tokenizer cannot encode mapped or dropped (when a vocabulary is given);
8. punctuation and spacing collapsed to the marks the model and pipeline expect.

The output is idempotent: normalising the spoken text again returns it unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from nutq.errors import ClientError
from nutq.text import lexicon, normalize
from nutq.text.align import Aligned
from nutq.text.diacritize import DEFAULT_MODEL, Diacritizer, diacritize_aligned, load_diacritizer
from nutq.text.latin import LatinSpan, latin_runs, read_latin
from nutq.text.quantities import read_numbers
from nutq.text.vocab import VocabCharset, fit_to_vocab

SUPPORTED_LANGS = ("ar",)


@dataclass(frozen=True, slots=True)
class FrontendConfig:
    """How the frontend reads.

    punctuation: "ascii" maps ؟ ، ؛ to ? , , (what the official pipeline's punc_norm and the other
        22 languages of the model use, so prosody cues are the most familiar); "arabic" keeps ؟ and
        ، inside the text (both are in the vocabulary). The final mark is ASCII either way.
    months: month names for numeric dates: "gregorian" (يناير، فبراير … as in Egypt and the Gulf)
        or "levantine" (كانون الثاني، شباط … as in the Levant and Iraq).
    diacritizer_model: text2tashkeel model used when diacritization is requested.
    """

    punctuation: Literal["ascii", "arabic"] = "ascii"
    months: Literal["gregorian", "levantine"] = "gregorian"
    diacritizer_model: str = DEFAULT_MODEL


@dataclass(frozen=True, slots=True)
class SpokenText:
    """The result of normalising one text.

    original: the input, unchanged.
    text: what the model should say.
    char_map: for each character of `text`, the half-open span [start, end) of `original` it
        stands for (a verbalised number maps every letter to the digits it replaced).
    latin_spans: runs of Latin-script words in `text` (with their original spans).
    dropped / mapped: characters removed or replaced by a different character, with counts
        (format characters, emoji, tatweel, letters outside the tokenizer vocabulary …).
    """

    original: str
    text: str
    char_map: tuple[tuple[int, int], ...]
    latin_spans: tuple[LatinSpan, ...] = ()
    dropped: tuple[tuple[str, int], ...] = ()
    mapped: tuple[tuple[str, int], ...] = ()
    diacritized: bool = False

    @property
    def n_dropped(self) -> int:
        return sum(c for _, c in self.dropped)

    @property
    def n_mapped(self) -> int:
        return sum(c for _, c in self.mapped)

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """The span of `original` covered by spoken characters [start, end)."""
        if not 0 <= start < end <= len(self.text):
            raise IndexError(f"spoken range [{start}, {end}) outside 0..{len(self.text)}")
        spans = self.char_map[start:end]
        return min(s for s, _ in spans), max(e for _, e in spans)

    def words(self) -> list[tuple[str, int, int]]:
        """Spoken words with the original span each one came from (for word timestamps)."""
        out = []
        i, n = 0, len(self.text)
        while i < n:
            if self.text[i] == " ":
                i += 1
                continue
            j = self.text.find(" ", i)
            j = n if j < 0 else j
            out.append((self.text[i:j], *self.original_span(i, j)))
            i = j
        return out

    def to_dict(self) -> dict:
        return {
            "original": self.original,
            "text": self.text,
            "char_map": [list(s) for s in self.char_map],
            "latin_spans": [
                {"start": s.start, "end": s.end, "orig_start": s.orig_start, "orig_end": s.orig_end,
                 "words": s.words, "text": s.text}
                for s in self.latin_spans
            ],
            "dropped": dict(self.dropped),
            "mapped": dict(self.mapped),
            "diacritized": self.diacritized,
        }


@dataclass
class TextFrontend:
    """Reusable frontend: holds the vocabulary charset and, once loaded, the diacritizer.

    Build one per engine; `normalize_text` is the one-shot convenience wrapper.
    """

    config: FrontendConfig = field(default_factory=FrontendConfig)
    vocab: VocabCharset | None = None
    _diacritizer: Diacritizer | None = field(default=None, repr=False)

    def diacritizer(self) -> Diacritizer:
        if self._diacritizer is None:
            self._diacritizer = load_diacritizer(self.config.diacritizer_model)
        return self._diacritizer

    def __call__(self, text: str, lang: str = "ar", *, diacritize: bool = False) -> SpokenText:
        if lang not in SUPPORTED_LANGS:
            raise ClientError(f"the nutq text frontend reads {SUPPORTED_LANGS}, not {lang!r}")
        tally = normalize.Tally()
        buf = Aligned.of(text)
        buf = normalize.clean_chars(buf, tally)
        buf = normalize.strip_markdown(buf)
        buf = normalize.fix_persian_letters(buf, tally)
        buf = normalize.expand_abbreviations(buf)
        buf = normalize.normalize_separators(buf)
        months = lexicon.MONTHS_LEVANTINE if self.config.months == "levantine" else lexicon.MONTHS_GREGORIAN
        buf = read_numbers(buf, months)
        buf = read_latin(buf)
        if diacritize:
            buf = diacritize_aligned(buf, self.diacritizer())
        if self.vocab is not None:
            buf = fit_to_vocab(buf, self.vocab, tally)
        arabic_marks = self.config.punctuation == "arabic"
        buf = normalize.punctuate(buf, arabic_marks)
        # Punctuation clean-up can expose text that an earlier pass would have rewritten
        # (":> x" → "> x" looks like a quote, "م\nأحمد" → "م. أحمد" like a title); repeat those
        # passes until nothing changes so the output is a fixed point (idempotent). Normally the
        # second round finds nothing and costs three regex scans.
        for _ in range(4):
            again = normalize.expand_abbreviations(normalize.strip_markdown(buf))
            again = normalize.punctuate(again, arabic_marks)
            if again.text == buf.text:
                break
            buf = again
        return SpokenText(
            original=text,
            text=buf.text,
            char_map=tuple(zip(buf.starts, buf.ends)),
            latin_spans=latin_runs(buf),
            dropped=tuple(sorted(tally.dropped.items())),
            mapped=tuple(sorted(tally.mapped.items())),
            diacritized=diacritize,
        )


def normalize_text(
    text: str,
    lang: str = "ar",
    *,
    vocab: VocabCharset | Iterable[str] | None = None,
    diacritize: bool = False,
    config: FrontendConfig | None = None,
) -> SpokenText:
    """Normalise `text` for speech. `vocab`: a VocabCharset or the tokenizer's token strings.

    Each call builds its frontend; for many calls (and always with diacritize=True, which loads a
    model) keep a `TextFrontend`.
    """
    if vocab is not None and not isinstance(vocab, VocabCharset):
        vocab = VocabCharset.of(vocab)
    return TextFrontend(config or FrontendConfig(), vocab)(text, lang, diacritize=diacritize)
