"""Text that the frontend expands past T3's text positions (issue 15, point 4), over a real
loopback socket on every protocol: it used to be an IndexError (500, "retryable") or close 1011;
now a long phrase is cut at words, then characters, and spoken. Only the one-utterance offline
path, which cannot cut, refuses it, naming the limit.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from websockets.sync.client import connect as ws_connect  # noqa: E402

from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.text.fit import TextTooLong, split_to_fit  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import http_request, running_server  # noqa: E402

TOKENS = 2  # speech tokens per phrase: the point is that every phrase is read, not how it sounds
# 250 characters that become 4,504 text tokens; 4,000 digits; digits that make one huge number word
OVERFLOWING = {"ligatures": "ﷺ" * 250, "digits": "9" * 4000, "number": "1" * 300 + " كتاب"}
SHORTER = "ﷺ" * 40  # 722 text tokens: past the tiny model's 514 positions, two phrases (quick to speak)


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint, max_sessions=1)


@pytest.fixture(scope="module")
def server(tts):
    with running_server(create_app(tts, ServeConfig(warmup=False, max_new_tokens=TOKENS))) as url:
        yield url


@pytest.mark.parametrize("name", OVERFLOWING)
def test_every_phrase_fits_the_model(tts, name):
    phrases = tts.phrases(OVERFLOWING[name])
    assert max(len(p.ids) for p in phrases) <= tts.phrase_token_limit <= tts.t3.cfg.max_text_tokens + 2
    assert len(phrases) > 1


def test_openai_and_seed_http_speak_it(server, tts):
    text = SHORTER
    assert len(tts.phrases(text)) == 2
    body = json.dumps({"model": "nutq", "input": text, "voice": "default", "response_format": "pcm"})
    status, _, audio = http_request(server, "POST", "/v1/audio/speech", body, {"Content-Type": "application/json"})
    assert status == 200 and audio
    status, _, audio = http_request(server, "GET", "/tts/stream?" + urlencode({"text": text}))
    assert status == 200 and audio


def test_the_websockets_speak_it(server):
    text = SHORTER
    base = server.replace("http://", "ws://")
    with ws_connect(base + "/ws/tts", proxy=None, open_timeout=30) as ws:
        ws.send(json.dumps({"text": text}))
        while isinstance(msg := ws.recv(timeout=120), bytes):
            pass
        assert json.loads(msg)["status"] == "complete", msg
    with ws_connect(base + "/v1/speak?encoding=linear16", proxy=None, open_timeout=30) as ws:
        assert json.loads(ws.recv(timeout=30))["type"] == "Metadata"
        ws.send(json.dumps({"type": "Speak", "text": text}))
        ws.send(json.dumps({"type": "Flush"}))
        audio = 0
        while isinstance(msg := ws.recv(timeout=120), bytes):
            audio += len(msg)
        assert json.loads(msg)["type"] == "Flushed" and audio, msg
    with ws_connect(base + "/v1/tts/ws", proxy=None, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "config", "context_id": "c", "timestamps": True}))
        ws.send(json.dumps({"type": "text", "context_id": "c", "text": text}))
        ws.send(json.dumps({"type": "close_context", "context_id": "c"}))
        while True:
            msg = ws.recv(timeout=120)
            if isinstance(msg, str) and json.loads(msg)["type"] in ("done", "error"):
                break
        assert json.loads(msg) | {"timings": None} == {"type": "done", "context_id": "c", "reason": "closed",
                                                       "timings": None}


def test_one_utterance_that_cannot_be_cut_is_refused_naming_the_limit(tts):
    with pytest.raises(TextTooLong, match=f"at most {tts.t3.cfg.max_text_tokens + 2}"):
        tts.text_ids(OVERFLOWING["ligatures"])


def test_split_to_fit_cuts_at_words_then_characters():
    count = len  # one token per character
    assert split_to_fit("ab cd", count, 5) == ["ab cd"]
    assert split_to_fit("ab cd ef", count, 5) == ["ab cd", "ef"]
    assert split_to_fit("abcdefg hi", count, 3) == ["abc", "def", "g", "hi"]
    with pytest.raises(TextTooLong, match="at most 0"):
        split_to_fit("a", count, 0)
