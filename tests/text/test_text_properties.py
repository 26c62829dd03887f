"""Properties over arbitrary input (hypothesis): no crash, idempotence, alignment, segmentation."""

from hypothesis import given, settings
from hypothesis import strategies as st

from nutq.text.frontend import normalize_text
from nutq.text.segment import PhraseSegmenter, SegmenterConfig

# Text that looks like the real thing: Arabic letters and marks, digits of three scripts,
# separators, currency/percent signs, Latin, markdown and emoji; plus fully arbitrary Unicode.
_ALPHABET = (
    "ابتثجحخدذرزسشصضطظعغفقكلمنهويءأإآؤئةىـ" "ًٌٍَُِّْ" "0123456789٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹"
    " \n\t.,،؛؟?!:;-–/%٪$€£﷼°٫٬½¾()[]«»\"'*#_`>|" "abcXYZkmgGB" "یکھ" "😀\u200f\u200d\ufeff"
)
realistic = st.text(alphabet=_ALPHABET, max_size=80)
anything = st.text(max_size=60)
texts = st.one_of(realistic, anything)


@settings(max_examples=300, deadline=None, database=None)
@given(texts)
def test_never_crashes_and_char_map_points_inside_the_original(text):
    r = normalize_text(text)
    assert len(r.char_map) == len(r.text)
    for s, e in r.char_map:
        assert 0 <= s <= e <= len(text)
        assert e > s or not text
    assert not any(c.isdigit() and c.isascii() for c in r.text), r.text  # every digit verbalised


@settings(max_examples=300, deadline=None, database=None)
@given(texts)
def test_normalisation_is_idempotent(text):
    once = normalize_text(text).text
    assert normalize_text(once).text == once


@settings(max_examples=200, deadline=None, database=None)
@given(realistic, st.integers(min_value=1, max_value=7), st.integers(min_value=0, max_value=30),
       st.integers(min_value=10, max_value=60))
def test_segmenter_emits_every_character_once_in_order(text, step, first_min, max_chars):
    cfg = SegmenterConfig(first_min_chars=first_min, soft_cut_chars=max_chars // 2, max_chars=max_chars)
    seg = PhraseSegmenter(cfg)
    out = []
    for i in range(0, len(text), step):
        out += seg.feed(text[i:i + step])
    out += seg.flush()
    joined = "".join(out)
    # Exact slices in order; only a whitespace-only tail may be left unemitted.
    assert text.startswith(joined)
    assert text[len(joined):].strip() == ""
    assert all(p.strip() for p in out)
    assert all(len(p) <= max_chars for p in out)


@settings(max_examples=100, deadline=None, database=None)
@given(realistic)
def test_segmentation_does_not_depend_on_chunking(text):
    cfg = SegmenterConfig(first_min_chars=10, soft_cut_chars=40, max_chars=80)
    def run(step):
        seg = PhraseSegmenter(cfg)
        out = []
        for i in range(0, len(text), step):
            out += seg.feed(text[i:i + step])
        return out + seg.flush()
    assert run(1) == run(len(text) or 1)
