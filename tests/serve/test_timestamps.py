"""Word timestamps: tokens map back to the words the user wrote, and chunk positions become
monotonic word times (nutq.serve.timestamps)."""

from __future__ import annotations

import pytest

from nutq.serve.timestamps import DEFAULT_LEAD_S, Word, WordTimer, phrase_words, spoken_text
from nutq.text.tokenizer import MTLTokenizer
from nutq.tts import TTS


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint)


def words_of(tts, phrase: str, language: str = "ar", normalize: bool = True) -> list[Word]:
    """Words of `phrase` against the ids the engine itself makes for it."""
    ids = tts.text_ids(phrase, language, normalize).tolist()
    words = phrase_words(phrase, spoken_text(phrase, language, normalize), ids, tts.tokenizer, language)
    assert words is not None, f"the token map disagrees with TTS.text_ids for {phrase!r}"
    return words


def test_encode_spans_are_the_encoded_characters(vocab_path):
    tok = MTLTokenizer.from_file(vocab_path)
    text = "مرحبا بكم. أهلا"
    ids, spans = tok.encode_spans(text, "ar")
    assert ids == tok.encode(text, "ar")
    assert spans[0] == (0, 0)  # the language tag
    # NFKD splits أ into two tokens (alef + hamza above): both come from the one input character
    hamza = text.index("أ")
    assert spans.count((hamza, hamza + 1)) == 2
    distinct = list(dict.fromkeys(spans[1:]))
    assert "".join(text[a:b] for a, b in distinct) == text  # in order, every character, [SPACE] its space


@pytest.mark.parametrize("phrase", [
    "مرحبا بكم",
    "  مرحبا   بكم،  كيف الحال؟  ",
    "عندي 25 كتابا في البيت.",
    "د. أحمد في **البيت** 😀 الآن",
    "زرت Google يوم 3/5",
])
def test_words_map_to_the_engine_ids_and_the_users_text(tts, phrase):
    words = words_of(tts, phrase)
    assert words, "a phrase with speech has timed words"
    n_ids = len(tts.text_ids(phrase))
    prev_end_char, prev_end_tok = 0, 2
    for w in words:
        assert w.text == phrase[w.start:w.end] and w.text.strip() == w.text
        assert w.start >= prev_end_char, "words are in text order and do not overlap"
        assert prev_end_tok <= w.first_token < w.end_token <= n_ids - 1, "tokens inside [first text token, EOT)"
        prev_end_char, prev_end_tok = w.end, w.end_token


def test_a_number_and_the_noun_read_with_it_are_one_unit(tts):
    # "25 كتابا" is read "خمسة وعشرون كتابًا": every letter of the reading comes from both words
    texts = [w.text for w in words_of(tts, "عندي 25 كتابا")]
    assert texts == ["عندي", "25 كتابا"]


def test_words_without_speech_get_no_timestamp(tts):
    texts = [w.text for w in words_of(tts, "د. أحمد 😀 هنا")]
    assert texts == ["د.", "أحمد", "هنا"]  # the abbreviation is read (الدكتور), the emoji is not


def test_unnormalized_and_other_languages(tts):
    assert [w.text for w in words_of(tts, "hello big world", "en")] == ["hello", "big", "world"]
    assert [w.text for w in words_of(tts, "مرحبا 25", "ar", normalize=False)] == ["مرحبا", "25"]


def test_spoken_text_is_empty_for_punctuation_only():
    assert spoken_text(" ... ، ", "ar").text == ""
    assert spoken_text("   ", "en", normalize=False).text == ""


def test_ids_of_another_text_give_no_words(tts):
    ids = tts.text_ids("نص آخر").tolist()
    assert phrase_words("مرحبا", spoken_text("مرحبا", "ar"), ids, tts.tokenizer, "ar") is None


def _words(*ranges) -> list[Word]:
    return [Word(f"w{i}", 2 * i, 2 * i + 1, a, b) for i, (a, b) in enumerate(ranges)]


def test_timer_interpolates_between_chunk_points_shifted_by_the_lead():
    words = _words((2, 4), (5, 7), (8, 10))  # ids: SOT, tag, 2..10 text, EOT = 11
    timer = WordTimer(words, n_ids=12, t0=1.0, lead_s=0.25)
    # chunk audio ends at 1.25 s while the guard is at token 4: position 4 belongs to 1.5 s
    out = timer.chunk(1.25, 4)
    assert [t.word.text for t in out] == ["w0"]
    assert out[0].start_s == pytest.approx(1.0) and out[0].end_s == pytest.approx(1.5)
    out = timer.chunk(1.75, 8)  # 4 -> 8 between 1.5 s and 2.0 s
    assert [t.word.text for t in out] == ["w1"]
    assert out[0].start_s == pytest.approx(1.5 + 0.5 * 1 / 4) and out[0].end_s == pytest.approx(1.5 + 0.5 * 3 / 4)
    out = timer.finish(2.5)  # 8 -> EOT (11) between 2.0 s and 2.5 s
    assert [t.word.text for t in out] == ["w2"]
    assert out[0].start_s == pytest.approx(2.0) and out[0].end_s == pytest.approx(2.0 + 0.5 * 2 / 3)


def test_timer_never_goes_back_and_never_past_the_end():
    words = _words((2, 3), (3, 5), (5, 6), (6, 8))
    timer = WordTimer(words, n_ids=9, t0=0.0)
    timed = timer.chunk(0.12, 5) + timer.chunk(0.36, 3)  # the guard's argmax may step back
    timed += timer.finish(0.40)  # the phrase ends before the last point's estimated time
    assert [t.word.text for t in timed] == ["w0", "w1", "w2", "w3"], "each word exactly once, in order"
    for a, b in zip(timed, timed[1:]):
        assert a.start_s <= b.start_s and a.end_s <= b.end_s
    for t in timed:
        assert 0.0 <= t.start_s <= t.end_s
    assert timed[-1].end_s <= max(0.40, timed[-2].end_s)


def test_timer_without_guard_spreads_words_by_tokens():
    words = _words((2, 4), (5, 9))  # 2 and 4 tokens; EOT = 9
    timer = WordTimer(words, n_ids=10, t0=0.0, lead_s=DEFAULT_LEAD_S)
    assert timer.chunk(0.5, 0) == [] and timer.chunk(1.0, 0) == []  # no guard: position stays 0
    out = timer.finish(1.4)
    assert [(round(t.start_s, 3), round(t.end_s, 3)) for t in out] == [(0.0, 0.4), (0.6, 1.4)]
