"""One phrase plan: the engine's `Phrase` carries its character map (`Phrase.spoken`), computed once
and read both by synthesis and by the native protocol's word timestamps, diacritized phrases too
(a stand-in diacritizer, a fatha after every letter, takes the `tashkeel` extra's place)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("websockets")

from websockets.sync.client import connect as ws_connect  # noqa: E402

from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.text.frontend import TextFrontend  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import running_server  # noqa: E402
from tests.test_tts_diacritize import fatha_everywhere  # noqa: E402

TEXT = "مرحبا بكم في نطق"


@pytest.fixture(scope="module")
def served(tiny_checkpoint):
    tts = TTS.from_local(tiny_checkpoint, max_sessions=1)
    planner = tts.engine.planner
    planner._frontend = TextFrontend(_diacritizer=fatha_everywhere)
    calls = []
    real = planner.spoken_map

    def counting(*a, **kw):
        calls.append(a)
        return real(*a, **kw)

    planner.spoken_map = counting
    with running_server(create_app(tts, ServeConfig(warmup=False))) as url:
        yield url, calls
    tts.close()


def _speak_native(url: str, text: str, **settings) -> list[dict]:
    """The `timestamps` words of one context speaking `text`."""
    words = []
    with ws_connect(url.replace("http", "ws") + "/v1/tts/ws") as ws:
        for m in ({"type": "config", "context_id": "a", "seed": 1, "max_tokens": 40, **settings},
                  {"type": "text", "context_id": "a", "text": text}, {"type": "close_context", "context_id": "a"}):
            ws.send(json.dumps(m))
        while True:
            msg = ws.recv(timeout=60)
            if isinstance(msg, bytes):
                continue
            m = json.loads(msg)
            assert m["type"] != "error", m
            if m["type"] == "timestamps":
                words += m["words"]
            if m["type"] == "done":
                return words


@pytest.mark.parametrize("diacritize", [False, True])
def test_native_timestamps_read_the_plan_made_once(served, diacritize):
    url, calls = served
    calls.clear()
    words = _speak_native(url, TEXT, diacritize=diacritize)
    assert len(calls) == 1  # one phrase, one map: synthesis and timestamps share it
    # diacritized or not, the words are the client's own, at their offsets in its text
    assert [w["word"] for w in words] == TEXT.split()
    assert all(TEXT[w["char_start"]:w["char_end"]] == w["word"] for w in words)
    assert all(w["start"] <= w["end"] for w in words)
    assert [w["start"] for w in words] == sorted(w["start"] for w in words)


def test_a_phrase_cut_to_fit_maps_each_piece_into_its_slice(tiny_checkpoint):
    tts = TTS.from_local(tiny_checkpoint, max_sessions=1)
    planner = tts.engine.planner
    planner.max_cache_len = planner.cfg.len_cond + 3 * 12  # 12 text ids per phrase at most
    text = "كلمة " * 12 + "نهاية."
    phrases = planner.plan(text, "ar", normalize=False, segment=False)
    assert len(phrases) > 1
    for p in phrases:
        assert p.text == text and len(p.ids) <= planner.token_limit
        spoken = p.spoken
        # each character of the piece T3 reads comes from where the map says in the user's text
        assert all(text[a:b] == ch or ch.isspace() for ch, (a, b) in zip(spoken.text, spoken.source))
    # the pieces follow one another through the text
    starts = [p.spoken.source[0][0] for p in phrases]
    assert starts == sorted(starts) and starts[0] == 0
