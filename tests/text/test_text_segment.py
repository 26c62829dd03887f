"""Streaming phrase segmentation: when each phrase becomes safe to speak."""

import pytest

from nutq.text.segment import PhraseSegmenter, SegmenterConfig


def stream(text: str, pieces: int = 1, config: SegmenterConfig | None = None) -> list[str]:
    """Feed `text` in chunks of `pieces` characters, then flush; return all phrases."""
    seg = PhraseSegmenter(config)
    out = []
    for i in range(0, len(text), pieces):
        out += seg.feed(text[i:i + pieces])
    return out + seg.flush()


def test_sentence_is_emitted_once_the_character_after_the_period_arrives():
    seg = PhraseSegmenter()
    assert seg.feed("ذهبت إلى السوق.") == []  # could still be "3.5" style: wait one character
    assert seg.feed(" ثم") == ["ذهبت إلى السوق."]
    assert seg.pending == " ثم"
    assert seg.flush() == [" ثم"]


@pytest.mark.parametrize("mark", ["?", "!", "؟"])
def test_question_and_exclamation_marks_are_hard_boundaries(mark):
    assert stream(f"هل أتيت{mark} نعم أتيت") == [f"هل أتيت{mark}", " نعم أتيت"]


def test_closing_quote_stays_with_its_sentence():
    assert stream('قال "نعم." ثم ذهب') == ['قال "نعم."', " ثم ذهب"]


def test_newline_is_a_boundary_without_waiting():
    seg = PhraseSegmenter()
    assert seg.feed("العنوان\n") == ["العنوان"]
    assert seg.flush() == []  # only whitespace left


@pytest.mark.parametrize(
    "text",
    [
        "الحرارة 3.5 درجات اليوم وغدا",  # decimal
        "الموعد 15.03.2025 في الصباح",  # date
        "الساعة 10:30 تماما والجميع حاضر",  # time (":" followed by a digit)
        "قابلت د. أحمد في المكتب اليوم",  # Arabic abbreviation
        "ص.ب 1234 الرياض والمملكة",  # P.O. box
        "Dr. Smith came and left",
        "الموقع example.com جميل جدا",
    ],
)
def test_guarded_periods_do_not_split(text):
    assert stream(text, pieces=3, config=SegmenterConfig(first_min_chars=0)) == [text]


def test_list_number_at_line_start_is_not_a_sentence_end():
    assert stream("1. افتح الباب\n2. اجلس") == ["1. افتح الباب", "\n2. اجلس"]


def test_first_phrase_of_a_turn_may_end_at_a_soft_boundary():
    text = "مرحبا بك يا صديقي العزيز، كيف حالك اليوم، وماذا فعلت"
    out = stream(text, pieces=2)
    # The first soft boundary after 12 characters ends the first phrase; later commas do not.
    assert out == ["مرحبا بك يا صديقي العزيز،", " كيف حالك اليوم، وماذا فعلت"]


def test_short_first_clause_is_not_cut():
    assert stream("نعم، أفهم ذلك تماما") == ["نعم، أفهم ذلك تماما"]


def test_soft_boundaries_cut_long_buffers():
    cfg = SegmenterConfig(first_min_chars=0, soft_cut_chars=40, max_chars=200)
    text = "هذه جملة طويلة جدا تحتوي على كلمات كثيرة، وتستمر بعد الفاصلة دون نهاية قريبة"
    out = stream(text, pieces=4, config=cfg)
    assert out[0] == "هذه جملة طويلة جدا تحتوي على كلمات كثيرة،"
    assert "".join(out) == text


def test_max_length_cuts_at_a_word_boundary():
    cfg = SegmenterConfig(first_min_chars=0, soft_cut_chars=20, max_chars=30)
    text = " ".join(["كلمة"] * 20)
    out = stream(text, pieces=5, config=cfg)
    assert "".join(out) == text
    assert all(len(p) <= 30 for p in out)
    assert all(not p.endswith("كل") for p in out)  # never inside a word
    assert all(p.strip() for p in out)


def test_word_longer_than_max_is_cut_hard():
    cfg = SegmenterConfig(first_min_chars=0, soft_cut_chars=5, max_chars=10)
    assert stream("ا" * 25, config=cfg) == ["ا" * 10, "ا" * 10, "ا" * 5]


def test_flush_starts_a_new_turn():
    seg = PhraseSegmenter()
    seg.feed("مرحبا بك يا صديقي العزيز، ")
    assert seg.flush() == []  # the comma phrase was already emitted on feed
    # New turn: the first soft boundary may cut again.
    assert seg.feed("أهلا وسهلا بكم جميعا، ") == ["أهلا وسهلا بكم جميعا،"]


def test_config_is_frozen_and_validated():
    cfg = SegmenterConfig()
    with pytest.raises(AttributeError):
        cfg.max_chars = 3  # type: ignore[misc]
    with pytest.raises(ValueError):
        SegmenterConfig(soft_cut_chars=300, max_chars=100)


def test_a_boundary_beyond_max_chars_does_not_make_an_overlong_phrase():
    cfg = SegmenterConfig(first_min_chars=0, soft_cut_chars=10, max_chars=10)
    assert stream("0000000000000\n", config=cfg) == ["0000000000", "000"]


def test_year_suffix_before_a_period_ends_the_sentence():
    assert stream("ولد عام 1990 م. ثم سافر") == ["ولد عام 1990 م.", " ثم سافر"]
    assert stream("قابلت م. خالد ثم عدت") == ["قابلت م. خالد ثم عدت"]  # title: no cut
