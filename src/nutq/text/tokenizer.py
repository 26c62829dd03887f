"""The Chatterbox Multilingual text tokenizer (`grapheme_mtl_merged_expanded_v1.json`).

A grapheme-level BPE vocabulary (HF `tokenizers`, Whitespace pre-tokenizer, 2454 ids) with
language tags. Encoding, as the official `MTLTokenizer.encode` does it:

1. `text.lower()`, then Unicode NFKD (so أ becomes ا + U+0654 hamza above, ﻻ becomes ل + ا, …);
2. language-specific step (see below);
3. prepend the language tag `[xx]`;
4. replace every ' ' with the added token `[SPACE]`;
5. `Tokenizer.encode(...).ids`.

The ids returned are `[xx] + text tokens`; T3 itself wraps them as `[START]=255 … [STOP]=0`.

Languages. All 23 official languages are accepted. For the following the official encoding is
reproduced exactly (proven by `tests/test_tokenizer.py` against the official code):
ar, da, de, el, en, es, fi, fr, hi, it, ms, nl, no, pl, pt, sv, sw, tr, and ko (NFKD already splits
Hangul syllables into conjoining jamo, so the official Korean step reduces to `strip()`).
Only the common path (steps 1, 3-5) is applied for:
- he, ru: the official code adds diacritics / stress marks *only* if the optional packages
  `dicta_onnx` / `russian_text_stresser` are installed (they are not dependencies of
  chatterbox-tts), so for a default official install the result is the same;
- ja: the official code converts kanji to hiragana with `pykakasi`; kana-only text is the same,
  text with kanji is not (the kanji come out as unknown characters here);
- zh: the official code segments with pkuseg and spells Han characters as Cangjie codes
  (`[cj_*]` tokens); not done here, so Han characters are reported as unknown.

Unknown characters are never silently lost: `encode_checked` reports every character of the
input that became `[UNK]` or that the Whitespace pre-tokenizer drops (tabs, newlines, other
whitespace that NFKD does not turn into ' '), and `strict=True` raises `UnknownCharactersError`.
The plain `encode` returns exactly the official ids (with `[UNK]` = 1 where the official has it).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer

from ..errors import ClientError

__all__ = [
    "SUPPORTED_LANGUAGES",
    "COMMON_PATH_ONLY",
    "Encoding",
    "MTLTokenizer",
    "UnknownCharactersError",
]

SOT, EOT, UNK, SPACE = "[START]", "[STOP]", "[UNK]", "[SPACE]"

# The 23 languages the official multilingual model supports (chatterbox.mtl_tts).
SUPPORTED_LANGUAGES: dict[str, str] = {
    "ar": "Arabic", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "ms": "Malay", "nl": "Dutch",
    "no": "Norwegian", "pl": "Polish", "pt": "Portuguese", "ru": "Russian", "sv": "Swedish",
    "sw": "Swahili", "tr": "Turkish", "zh": "Chinese",
}

# Languages whose official encoding has an extra step we do not reproduce (see module docstring).
COMMON_PATH_ONLY: frozenset[str] = frozenset({"he", "ja", "ru", "zh"})


class UnknownCharactersError(ClientError):
    """Raised in strict mode when the vocabulary cannot represent some input characters."""

    def __init__(self, unknown: list[tuple[int, str]], language: str):
        self.unknown = unknown
        self.language = language
        shown = ", ".join(f"{c!r} (U+{ord(c):04X}) at {i}" for i, c in unknown[:20])
        more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
        super().__init__(
            f"{len(unknown)} character(s) not in the [{language}] tokenizer vocabulary "
            f"(they would become [UNK] or be dropped): {shown}{more}"
        )


@dataclass(frozen=True)
class Encoding:
    """Result of `MTLTokenizer.encode_checked`.

    ids: the official ids, `[xx]` tag first (no [START]/[STOP]).
    unknown: (index into the *input* text, character after lower+NFKD) for every character that
        became [UNK] or was dropped. Indices come from per-character normalization lengths; when
        NFKD reorders combining marks the index may point at a neighbouring mark of the same letter.
    text: the normalized text that was tokenized (before the tag and [SPACE] substitution).
    """

    ids: list[int]
    unknown: list[tuple[int, str]] = field(default_factory=list)
    text: str = ""

    @property
    def ok(self) -> bool:
        return not self.unknown


class MTLTokenizer:
    """Official-equivalent multilingual grapheme tokenizer; see the module docstring."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        vocab = tokenizer.get_vocab()
        missing = [t for t in (SOT, EOT, UNK, SPACE) if t not in vocab]
        if missing:
            raise ValueError(f"tokenizer vocabulary lacks the special tokens {missing}")
        self.sot_id: int = vocab[SOT]
        self.eot_id: int = vocab[EOT]
        self.unk_id: int = vocab[UNK]
        self.space_id: int = vocab[SPACE]
        self._lang_ids = {lang: vocab[f"[{lang}]"] for lang in SUPPORTED_LANGUAGES if f"[{lang}]" in vocab}

    @classmethod
    def from_file(cls, path: str | Path) -> MTLTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def supported_languages(self) -> tuple[str, ...]:
        """Official languages whose `[xx]` tag this vocabulary has (all 23 in the real file)."""
        return tuple(sorted(self._lang_ids))

    def language_id(self, language: str) -> int:
        """Id of the `[xx]` tag; ValueError naming the supported languages otherwise."""
        return self._lang_ids[self._check_language(language)]

    def _check_language(self, language: str) -> str:
        lang = language.lower() if isinstance(language, str) else language
        if lang not in self._lang_ids:
            raise ClientError(
                f"unsupported language {language!r}; supported: {', '.join(self.supported_languages)}"
            )
        return lang

    @staticmethod
    def normalize(text: str, language: str) -> str:
        """Steps 1-2: lowercase, NFKD, and Korean's strip (the only language step we reproduce)."""
        text = unicodedata.normalize("NFKD", text.lower())
        return text.strip() if language == "ko" else text

    def encode(self, text: str, language: str, *, strict: bool = False) -> list[int]:
        """The official ids for `text` (`[xx]` + text tokens). Empty text gives just `[xx]`.

        strict=True raises UnknownCharactersError if any character would become [UNK] or be
        dropped, and ValueError if nothing but the language tag would remain.
        """
        if not strict:
            lang = self._check_language(language)
            return self._tok.encode(self._tagged(self.normalize(text, lang), lang)).ids
        enc = self.encode_checked(text, language)
        if enc.unknown:
            raise UnknownCharactersError(enc.unknown, language.lower())
        if len(enc.ids) < 2:
            raise ClientError(f"text {text!r} is empty after normalization; nothing to synthesize")
        return enc.ids

    def encode_checked(self, text: str, language: str) -> Encoding:
        """Like `encode`, also listing every input character the vocabulary cannot represent."""
        lang = self._check_language(language)
        lowered = unicodedata.normalize("NFKD", text.lower())
        norm = self.normalize(text, lang)
        lead = len(lowered) - len(lowered.lstrip()) if lang == "ko" else 0  # chars strip() removed

        fed_src = self._fed_sources(norm, lang)
        enc = self._tok.encode(self._tagged(norm, lang))

        covered = [False] * len(fed_src)
        unk_pos: set[int] = set()
        for tid, (a, b) in zip(enc.ids, enc.offsets):
            for k in range(a, b):
                covered[k] = True
                if tid == self.unk_id:
                    unk_pos.add(k)
        bad = sorted({fed_src[k] for k in range(len(fed_src)) if fed_src[k] >= 0 and (k in unk_pos or not covered[k])})

        owner = self._input_index(text, len(lowered))
        unknown = [(owner[j + lead], norm[j]) for j in bad]
        return Encoding(ids=list(enc.ids), unknown=unknown, text=norm)

    def encode_spans(self, text: str, language: str) -> tuple[list[int], list[tuple[int, int]]]:
        """`encode(text, language)` and, for each id, the span [start, end) of `text` it encodes
        ((0, 0) for the language tag); `[SPACE]` covers its space. For word timestamps."""
        lang = self._check_language(language)
        lowered = unicodedata.normalize("NFKD", text.lower())
        norm = self.normalize(text, lang)
        lead = len(lowered) - len(lowered.lstrip()) if lang == "ko" else 0
        fed_src = self._fed_sources(norm, lang)
        owner = self._input_index(text, len(lowered))
        enc = self._tok.encode(self._tagged(norm, lang))
        spans = []
        for a, b in enc.offsets:
            src = [owner[fed_src[k] + lead] for k in range(a, b) if fed_src[k] >= 0]
            spans.append((min(src), max(src) + 1) if src else (0, 0))
        return list(enc.ids), spans

    @staticmethod
    def _fed_sources(norm: str, lang: str) -> list[int]:
        """For each character of the tagged string `_tagged(norm, lang)`, the index in `norm` it
        came from (-1 for the tag; every character of a `[SPACE]` points at its space)."""
        fed_src = [-1] * len(f"[{lang}]")
        for j, c in enumerate(norm):
            fed_src.extend([j] * (len(SPACE) if c == " " else 1))
        return fed_src

    @staticmethod
    def _input_index(text: str, n_norm: int) -> list[int]:
        """For each char of NFKD(lower(text)), the index of the input char it came from.

        Lowercasing (final sigma aside) and NFKD decomposition act per character and canonical
        reordering only permutes marks, so the per-character lengths add up to the whole's.
        """
        owner: list[int] = []
        for i, c in enumerate(text):
            owner.extend([i] * len(unicodedata.normalize("NFKD", c.lower())))
        if len(owner) != n_norm:  # cannot happen per the above; keep indices in range regardless
            owner = (owner + [len(text) - 1] * n_norm)[:n_norm]
        return owner

    @staticmethod
    def _tagged(norm: str, lang: str) -> str:
        return f"[{lang}]" + norm.replace(" ", SPACE)

    def decode(self, ids) -> str:
        """Ids back to text as the official `decode` does it: [SPACE] → ' ', [STOP]/[UNK] removed.

        Language tags and [START] are kept verbatim, like the official. Accepts a list or a tensor.
        """
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        txt = self._tok.decode([int(i) for i in ids], skip_special_tokens=False)
        return txt.replace(" ", "").replace(SPACE, " ").replace(EOT, "").replace(UNK, "")
