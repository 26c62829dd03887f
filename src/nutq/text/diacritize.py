"""Optional diacritization (tashkeel), off by default.

Vowel marks remove the model's guesswork on unvocalised Arabic (كتب: kataba / kutub / kutiba).
The backend is `text2tashkeel` (Apache-2.0): ONNX models shipped inside the wheel, no network,
needing only numpy and onnxruntime. It is imported lazily, on first use, so nutq works without it;
install it with the `tashkeel` extra. The default model is `rawi-v2-int8`, its fastest bundled
model (about 2.3% diacritic error rate, a few ms per sentence on CPU), because this runs on the
path to first audio.

Existing harakat are never overwritten: the diacritizer's marks are added only to letters that
have none in the input. Letters themselves are never changed (the rawi models also restore hamza
on a bare alef; that spelling change is not applied, only the marks).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from nutq.text.align import Aligned
from nutq.errors import UnavailableError

DEFAULT_MODEL = "rawi-v2-int8"

Diacritizer = Callable[[str], str]


class DiacritizerUnavailable(UnavailableError):
    """Raised when diacritization is requested but no backend can be loaded."""


def load_diacritizer(model: str = DEFAULT_MODEL) -> Diacritizer:
    """A callable text → vocalised text, backed by text2tashkeel (imported here, lazily)."""
    try:
        import text2tashkeel  # noqa: PLC0415  (optional dependency, imported on demand)
    except ImportError as e:
        raise DiacritizerUnavailable(
            "diacritize=True needs the optional package text2tashkeel "
            "(pip install 'nutq[tashkeel]' or pip install text2tashkeel)"
        ) from e
    try:
        backend = text2tashkeel.Diacritizer(model)
    except Exception as e:  # unknown model name, missing bundled file, onnxruntime failure
        raise DiacritizerUnavailable(f"text2tashkeel could not load model {model!r}: {e}") from e
    return backend.diacritize


def is_mark(ch: str) -> bool:
    """Arabic harakat, tanween, shadda, sukun, dagger alef and the Quranic small marks."""
    o = ord(ch)
    return 0x064B <= o <= 0x065F or o == 0x0670 or 0x06D6 <= o <= 0x06ED


_ALEF_FAMILY = str.maketrans("أإآٱ", "اااا")


def _clusters(text: str) -> list[tuple[str, str]]:
    """(base character, marks following it) pairs; leading marks attach to an empty base."""
    out: list[tuple[str, str]] = []
    for ch in text:
        if is_mark(ch):
            if out:
                out[-1] = (out[-1][0], out[-1][1] + ch)
            else:
                out.append(("", ch))
        else:
            out.append((ch, ""))
    return out


def merge_marks(original: str, vocalised: str) -> list[tuple[str, str]]:
    """For each base character of `original`, the marks to write after it.

    Marks already in `original` win; otherwise the vocalised text's marks are taken where its
    letters align with the original's (alef forms compare equal, as the backend may add hamza).
    """
    mine = _clusters(original)
    theirs = _clusters(vocalised)
    a = "".join(b for b, _ in mine).translate(_ALEF_FAMILY)
    b = "".join(b for b, _ in theirs).translate(_ALEF_FAMILY)
    result = list(mine)
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        if tag != "equal":
            continue
        for k in range(i2 - i1):
            base, marks = mine[i1 + k]
            if not marks:
                result[i1 + k] = (base, theirs[j1 + k][1])
    return result


def diacritize_aligned(buf: Aligned, diacritizer: Diacritizer) -> Aligned:
    """Add marks from `diacritizer` to `buf`, keeping alignment (a new mark maps to its letter)."""
    text = buf.text
    if not any("\u0621" <= c <= "\u064a" for c in text):
        return buf
    mine = _clusters(text)
    merged = merge_marks(text, diacritizer(text))
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    pos = 0
    for (base, own), (_, marks) in zip(mine, merged):
        width = len(base) + len(own)
        if marks == own:  # untouched cluster: copy characters and spans
            out.append(text[pos:pos + width])
            starts.extend(buf.starts[pos:pos + width])
            ends.extend(buf.ends[pos:pos + width])
        else:  # a bare letter that received marks: all of them point at the letter
            out.append(base + marks)
            starts.extend([buf.starts[pos]] * (1 + len(marks)))
            ends.extend([buf.ends[pos]] * (1 + len(marks)))
        pos += width
    return Aligned("".join(out), starts, ends)
