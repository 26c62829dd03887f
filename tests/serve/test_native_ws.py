"""The native multi-context WebSocket `/v1/tts/ws` over a real loopback socket (websockets client).

One uvicorn server (tiny random checkpoint, two KV slots) serves the module. Audio is compared with
`TTS.stream` run in-process: a context speaks each phrase its segmenter cuts as one engine stream,
phrase i with seed + i, so

* text without a phrase boundary before `flush` is one phrase, and its audio equals
  `tts.stream(joined_text, seed=seed)` sample for sample;
* text with boundaries equals the phrases' own streams (`segment=False`, seeds seed, seed + 1, ...)
  joined; it does not equal `tts.stream(joined_text)`, whose random generators run on across phrases.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
websockets = pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from nutq.engine.sampling import SamplingParams  # noqa: E402
from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.audio_out import to_int16  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.serve.native_protocol import pack_audio_frame, unpack_audio_frame  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import running_server, wait_released  # noqa: E402

KEY = "native-key"
TOKENS = 12  # per phrase: short outputs keep the module fast
MAX_CHARS = 200
# A cancelled stream stops within one decode step; 300 tokens take far longer than this on CPU.
STOP_WITHIN_S = 5.0
LONG = "هذا نص طويل جدا بلا أي علامة ترقيم يستمر ويستمر حتى النهاية البعيدة"  # one phrase
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint, max_sessions=2)


@pytest.fixture(scope="module")
def app(tts):
    # one client speaks two contexts at once: both slots (the default leaves a client half of them)
    return create_app(tts, ServeConfig(api_keys=(KEY,), max_new_tokens=400, max_input_chars=MAX_CHARS,
                                       max_streams_per_key=2))


@pytest.fixture(scope="module")
def server(app):
    with running_server(app) as url:
        yield url.replace("http://", "ws://") + "/v1/tts/ws"


def expected(tts, text: str, seed: int, *, segment: bool = True, tokens: int = TOKENS) -> np.ndarray:
    chunks = tts.stream(text, tts.voices.get("default"), "ar", params=SamplingParams(max_new_tokens=tokens),
                        seed=seed, segment=segment)
    return np.concatenate([c.audio for c in chunks])


class Client:
    """A websockets connection speaking the protocol; `events` records everything received as
    ("audio", context_id, bytes) or ("json", message)."""

    def __init__(self, url: str, key: str | None = KEY):
        headers = {"Authorization": f"Bearer {key}"} if key else None
        self._connect = connect(url, additional_headers=headers, proxy=None, open_timeout=30)
        self.events: list[tuple] = []

    def __enter__(self) -> "Client":
        self.ws = self._connect.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._connect.__exit__(*exc)

    def send(self, **msg) -> None:
        self.ws.send(json.dumps(msg, ensure_ascii=False))

    def text(self, cid: str, text: str) -> None:
        self.send(type="text", context_id=cid, text=text)

    def recv(self, timeout: float = 60) -> tuple:
        m = self.ws.recv(timeout=timeout)
        event = ("audio", *unpack_audio_frame(m)) if isinstance(m, bytes) else ("json", json.loads(m))
        self.events.append(event)
        return event

    def until(self, pred, timeout: float = 120) -> list[tuple]:
        """Receive until `pred(message)` holds for a JSON message; returns the events up to it."""
        start = len(self.events)
        deadline = time.monotonic() + timeout
        while True:
            event = self.recv(max(deadline - time.monotonic(), 0.1))
            if event[0] == "json" and pred(event[1]):
                return self.events[start:]

    def until_done(self, *cids: str) -> dict[str, dict]:
        done: dict[str, dict] = {}
        self.until(lambda m: m["type"] == "done" and done.setdefault(m["context_id"], m) and set(done) >= set(cids))
        return done

    def error(self) -> dict:
        """The next message, which must be an error."""
        kind, msg = self.recv(timeout=30)
        assert kind == "json" and msg["type"] == "error", f"expected an error message, got {msg!r}"
        return msg


def audio_of(events, cid: str) -> bytes:
    return b"".join(e[2] for e in events if e[0] == "audio" and e[1] == cid)


def f32(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4")


def json_of(events, kind: str, cid: str | None = None) -> list[dict]:
    return [e[1] for e in events if e[0] == "json" and e[1]["type"] == kind and cid in (None, e[1].get("context_id"))]


def cancelled_streams(app) -> float:
    labels = {"protocol": "native", "outcome": "cancelled"}
    return app.state.ctx.metrics.registry.get_sample_value("nutq_streams_total", labels) or 0


def test_pieces_then_flush_equal_one_stream_of_the_joined_text(server, tts, app):
    with Client(server) as c:
        c.send(type="config", output_format="pcm_f32le", seed=11, max_tokens=TOKENS)
        for piece in ["مرح", "با ", "بكم"]:  # no phrase boundary: one phrase, spoken at the flush
            c.text("a", piece)
        c.send(type="flush", context_id="a")
        events = c.until(lambda m: m["type"] == "flushed")
        assert json_of(events, "error") == []
        c.send(type="close_context", context_id="a")
        done = c.until_done("a")["a"]
    audio = f32(audio_of(events, "a"))  # all of it before `flushed`
    np.testing.assert_array_equal(audio, expected(tts, "مرحبا بكم", 11))
    assert audio_of(c.events, "a") == audio_of(events, "a"), "PCM leaves nothing for the close"
    assert done["reason"] == "closed"
    t = done["timings"]
    assert t["phrases"] == 1 and t["audio_s"] == pytest.approx(len(audio) / 24000)
    assert t["first_audio_latency_s"] > 0 and t["rtf"] > 0
    wait_released(app, timeout=30)


def test_complete_phrases_speak_before_flush_each_with_the_next_seed(server, tts):
    with Client(server) as c:
        c.send(type="config", output_format="pcm_f32le", seed=5, max_tokens=TOKENS)
        c.text("a", "مرحبا ")
        c.text("a", "بكم. هذا")  # "مرحبا بكم." is complete once the space after its period is here
        kind, cid, _ = c.recv()
        assert (kind, cid) == ("audio", "a"), "the complete phrase is spoken before any flush"
        c.text("a", " نص قصير")
        c.send(type="close_context", context_id="a")
        c.until_done("a")
    want = np.concatenate([expected(tts, "مرحبا بكم.", 5, segment=False),
                           expected(tts, " هذا نص قصير", 6, segment=False)])
    np.testing.assert_array_equal(f32(audio_of(c.events, "a")), want)


def test_two_contexts_on_one_socket_both_complete_unmixed(server, tts, app):
    texts = {"x": "مرحبا بكم", "y": "أهلا وسهلا"}
    with Client(server) as c:
        c.send(type="config", output_format="pcm_f32le", max_tokens=TOKENS)
        c.send(type="config", context_id="x", seed=1)
        c.send(type="config", context_id="y", seed=2)
        for cid, text in texts.items():
            c.text(cid, text)
        for cid in texts:
            c.send(type="close_context", context_id=cid)
        done = c.until_done("x", "y")
    for seed, (cid, text) in enumerate(texts.items(), start=1):
        np.testing.assert_array_equal(f32(audio_of(c.events, cid)), expected(tts, text, seed),
                                      err_msg=f"context {cid}: its audio alone, nothing of the other")
        assert done[cid]["reason"] == "closed"
    wait_released(app, timeout=30)


def test_cancel_stops_the_context_at_once_and_frees_its_slot(server, tts, app):
    before = cancelled_streams(app)
    with Client(server) as c:
        c.send(type="config", output_format="pcm_f32le", seed=3, max_tokens=300)
        c.text("long", LONG)
        c.send(type="flush", context_id="long")
        while c.recv()[:2] != ("audio", "long"):
            pass
        c.send(type="cancel", context_id="long")
        done = c.until_done("long")["long"]
        assert done["reason"] == "cancelled"
        cancelled_at = len(c.events)
        wait_released(app, timeout=STOP_WITHIN_S)
        # the socket goes on, and nothing more comes for the cancelled context
        c.send(type="config", max_tokens=TOKENS)
        c.text("next", "مرحبا")
        c.send(type="close_context", context_id="next")
        c.until_done("next")
        after = c.events[cancelled_at:]
        assert not [e for e in after if (e[1] if e[0] == "audio" else e[1].get("context_id")) == "long"]
        assert audio_of(after, "next")
    assert cancelled_streams(app) == before + 1


def test_a_client_disconnecting_mid_stream_frees_its_slots(server, tts, app):
    before = cancelled_streams(app)
    with Client(server) as c:
        c.send(type="config", output_format="pcm_f32le", max_tokens=300)
        for cid in ("p", "q"):
            c.text(cid, LONG)
            c.send(type="flush", context_id=cid)
        while len({e[1] for e in c.events if e[0] == "audio"}) < 2:
            c.recv()
    wait_released(app, timeout=STOP_WITHIN_S)
    assert cancelled_streams(app) == before + 2


def test_bad_inputs_get_errors_and_the_socket_stays_usable(server, tts):
    cases = [
        ("{not json", "invalid_json", None),
        (json.dumps({"type": "speak", "text": "x"}), "unknown_type", "type"),
        (json.dumps([1, 2]), "unknown_type", "type"),
        (json.dumps({"type": "text", "context_id": "a", "text": 5}), "invalid_value", "text"),
        (json.dumps({"type": "text", "context_id": "a b", "text": "x"}), "invalid_value", "context_id"),
        (json.dumps({"type": "config", "temperature": "hot"}), "invalid_value", "temperature"),
        (json.dumps({"type": "config", "colour": "blue"}), "invalid_value", "colour"),
        (json.dumps({"type": "config", "voice": "no-such-voice"}), "voice_not_found", "voice"),
        (json.dumps({"type": "config", "language": "xx"}), "unsupported_language", "language"),
        (json.dumps({"type": "config", "output_format": "wma"}), "unsupported_format", "output_format"),
        (json.dumps({"type": "config", "output_format": "opus", "sample_rate": 44100}), "unsupported_format",
         "output_format"),
        (json.dumps({"type": "config", "max_tokens": 10_000}), "invalid_value", "max_tokens"),
        (json.dumps({"type": "flush", "context_id": "never"}), "unknown_context", "context_id"),
        (json.dumps({"type": "cancel", "context_id": "never"}), "unknown_context", "context_id"),
        (json.dumps({"type": "text", "context_id": "big", "text": "ب" * (MAX_CHARS + 1)}), "input_too_long", "text"),
        (pack_audio_frame("a", b"\x00\x01"), "invalid_message", None),
    ]
    with Client(server) as c:
        for raw, code, param in cases:
            c.ws.send(raw)
            err = c.error()
            assert (err["code"], err["param"]) == (code, param), f"{raw!r}: {err}"
            assert err["retryable"] is False and err["message"]
        # a context was configured before its first text: configuring it again is refused
        c.send(type="config", context_id="ok", seed=4, output_format="pcm_f32le", max_tokens=TOKENS)
        c.send(type="config", context_id="ok", seed=5)
        assert c.error()["code"] == "context_active"
        # after all of that the connection (and its settings from before the errors) still work
        c.text("ok", "مرحبا")
        c.send(type="close_context", context_id="ok")
        assert c.until_done("ok")["ok"]["reason"] == "closed"
    np.testing.assert_array_equal(f32(audio_of(c.events, "ok")), expected(tts, "مرحبا", 4))


def test_without_a_key_the_socket_is_refused_with_1008(server):
    with Client(server, key=None) as c:
        err = c.error()
        assert err["code"] == "invalid_api_key"
        with pytest.raises(ConnectionClosed) as closed:
            c.recv(timeout=10)
    assert closed.value.rcvd.code == 1008
    with Client(server, key="wrong") as c:
        assert c.error()["code"] == "invalid_api_key"


def test_timestamps_are_words_of_the_users_text_in_audio_order(server):
    pieces = ["مرحبا ", "بكم يا ", "أصدقائي. ", "عندي 25 ", "كتابا ", "في **البيت**، ", "والآن نبدأ"]
    text = "".join(pieces)
    with Client(server) as c:
        c.send(type="config", max_tokens=TOKENS, seed=9)
        for p in pieces:
            c.text("t", p)
        c.send(type="close_context", context_id="t")
        done = c.until_done("t")["t"]
    words = [w for m in json_of(c.events, "timestamps", "t") for w in m["words"]]
    assert len(words) >= 3, "every phrase times its words"
    prev = None
    for w in words:
        assert w["word"] == text[w["char_start"]:w["char_end"]], "a slice of the text as sent"
        assert 0 <= w["start"] <= w["end"] <= done["timings"]["audio_s"] + 1e-3
        if prev is not None:
            assert w["char_start"] >= prev["char_end"], "text order, no overlap"
            assert w["start"] >= prev["start"] and w["end"] >= prev["end"], "monotonic in time"
        prev = w
    assert {"25 كتابا", "**البيت**،"} <= {w["word"] for w in words}  # a read-out number and its noun: one unit


def test_base64_mode_and_a_per_context_format(server, tts):
    with Client(server) as c:
        c.send(type="config", seed=7, max_tokens=TOKENS)
        c.send(type="config", context_id="b", audio_mode="base64", output_format="wav", timestamps=False)
        c.text("b", "مرحبا بكم")
        c.send(type="close_context", context_id="b")
        c.until_done("b")
    assert not [e for e in c.events if e[0] == "audio"], "base64 mode sends no binary frames"
    assert not json_of(c.events, "timestamps")
    msgs = json_of(c.events, "audio", "b")
    assert [m["seq"] for m in msgs] == list(range(len(msgs)))
    wav = b"".join(base64.b64decode(m["audio"]) for m in msgs)
    assert wav[:4] == b"RIFF" and wav[36:40] == b"data"
    np.testing.assert_array_equal(np.frombuffer(wav[44:], "<i2"), to_int16(expected(tts, "مرحبا بكم", 7)))


def test_binary_frames_round_trip():
    assert unpack_audio_frame(pack_audio_frame("ctx-1", b"\x01\x02")) == ("ctx-1", b"\x01\x02")
    with pytest.raises(ValueError):
        unpack_audio_frame(b"\x05ab")


def test_the_committed_schema_is_generated_from_the_models():
    out = subprocess.run([sys.executable, "-m", "nutq.serve.native_protocol", "--schema"], check=True,
                         capture_output=True, text=True).stdout
    committed = REPO / "docs" / "protocols" / "native.schema.json"
    assert json.loads(out) == json.loads(committed.read_text()), (
        "docs/protocols/native.schema.json is stale: python -m nutq.serve.native_protocol --schema > "
        "docs/protocols/native.schema.json")
