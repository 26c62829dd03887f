"""Keep the spoken text inside what the tokenizer can encode.

The multilingual grapheme tokenizer maps each character to an id, after lowercasing and NFKD (as
the official encoder does); anything else becomes [UNK], which the model never saw in training
and which derails alignment. So before tokenization every character that cannot be encoded is
mapped to a close equivalent that can (its base letter, a plain dash or quote, a comma), or
dropped; both are counted in the result instead of disappearing into [UNK].
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

from nutq.text.align import Aligned
from nutq.text.normalize import Tally

# Tokens that stand for a character the encoder rewrites before lookup.
_SPECIAL = {"[SPACE]": " "}


@dataclass(frozen=True)
class VocabCharset:
    """The characters a tokenizer can encode. `encodable` checks a character the way the
    official encoder sees it: lowercased, then NFKD, every resulting code point in the vocab."""

    chars: frozenset[str]
    _memo: dict[str, bool] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def of(cls, vocab: Iterable[str]) -> VocabCharset:
        """From any iterable of token strings; only single characters matter here."""
        chars = set()
        for tok in vocab:
            tok = _SPECIAL.get(tok, tok)
            if len(tok) == 1:
                chars.add(tok)
        return cls(frozenset(chars))

    def encodable(self, ch: str) -> bool:
        hit = self._memo.get(ch)  # a cache, not state: the answer never changes for a charset
        if hit is None:
            decomposed = unicodedata.normalize("NFKD", ch.lower())
            hit = bool(decomposed) and all(c in self.chars for c in decomposed)
            self._memo[ch] = hit
        return hit


def load_vocab_charset(path: str | PathLike[str]) -> VocabCharset:
    """Charset of a Hugging Face `tokenizers` JSON file (its `model.vocab` keys)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        vocab = data["model"]["vocab"]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a tokenizers JSON with model.vocab") from e
    return VocabCharset.of(vocab)


def _fallback(ch: str, charset: VocabCharset) -> str:
    """A close encodable equivalent of `ch`, or "" to drop it."""
    # 1. Decompose and keep the encodable parts (a letter without an unknown accent).
    parts = "".join(c for c in unicodedata.normalize("NFKD", ch) if charset.encodable(c))
    if parts and not all(unicodedata.combining(c) for c in parts):
        return parts
    # 2. The base letter named in the Unicode name ("ARABIC LETTER BEH WITH SMALL V" → ب).
    name = unicodedata.name(ch, "")
    if " WITH " in name:
        try:
            base = unicodedata.lookup(name.split(" WITH ")[0])
        except KeyError:
            base = ""
        if base and charset.encodable(base):
            return base
    # 3. By category: dashes, quotes, spaces, other punctuation.
    cat = unicodedata.category(ch)
    for cand, ok in (("-", cat == "Pd"), ('"', cat in ("Pi", "Pf")), (" ", cat.startswith("Z")),
                     (",", cat.startswith("P"))):
        if ok and charset.encodable(cand):
            return cand
    return ""


def fit_to_vocab(buf: Aligned, charset: VocabCharset, tally: Tally) -> Aligned:
    """Map or drop every character the tokenizer cannot encode, counting each in `tally`."""

    def fn(_i: int, ch: str) -> str | None:
        if ch == " " or charset.encodable(ch):
            return None
        rep = _fallback(ch, charset)
        if rep:
            tally.mapped[ch] += 1
        else:
            tally.dropped[ch] += 1
        return rep

    return buf.map_chars(fn)
