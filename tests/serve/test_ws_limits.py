"""WebSocket safety limits over real loopback sockets: the idle timeout, the message rate, the
frame size (`ws_util.WsReceiver`) and stream admission per key and in total (`limits.StreamLimiter`),
as clients of the native (`/v1/tts/ws`), seed (`/ws/tts`) and Deepgram (`/v1/speak`) protocols see them.

One tiny random TTS (two KV slots) serves two servers: `idle_server` with a 0.5 s idle timeout, and
`strict_server` with a low message rate, a small frame limit and one stream per key, two in total.
Speech lasts "long" here by asking for many tokens; such streams are cancelled, never awaited.
"""

from __future__ import annotations

import json
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.serve.native_protocol import unpack_audio_frame  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import running_server, wait_released  # noqa: E402

IDLE_S = 0.5
RATE = 5  # messages per second; the burst is twice that
MAX_FRAME = 2000
KEYS = ("key-a", "key-b", "key-c")
SHORT = 12  # tokens
# The tiny model makes ~25-100 tokens/s on CPU: 60 tokens outlast the idle timeout on any CI machine,
# 400 outlast every test that needs a stream to stay live (those are cancelled).
SPEECH, ENDLESS = 60, 400
TEXT = "مرحبا بكم"
LONG = "هذا نص طويل جدا بلا أي علامة ترقيم يستمر ويستمر حتى النهاية البعيدة"  # one phrase
PATHS = {"native": "/v1/tts/ws", "seed": "/ws/tts", "deepgram": "/v1/speak?encoding=linear16"}


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint, max_sessions=2)


def serve(tts, **config):
    app = create_app(tts, ServeConfig(warmup=False, max_new_tokens=ENDLESS, **config))
    return app, running_server(app)


@pytest.fixture(scope="module")
def idle_server(tts):
    app, server = serve(tts, idle_timeout_s=IDLE_S)
    with server as url:
        yield app, url.replace("http://", "ws://")


@pytest.fixture(scope="module")
def strict_server(tts):
    # Admission: per key first, then in total, so key-b fills the second slot and key-c finds none.
    app, server = serve(tts, api_keys=KEYS, max_streams_per_key=1, max_streams=2, max_messages_per_s=RATE,
                        max_frame_bytes=MAX_FRAME)
    with server as url:
        yield app, url.replace("http://", "ws://")


def ws(url: str, protocol: str, key: str | None = None):
    headers = {"Authorization": f"Token {key}"} if key else None
    return connect(url + PATHS[protocol], additional_headers=headers, proxy=None, open_timeout=30)


def recv_json(sock, timeout: float = 30) -> dict:
    """The next JSON message, skipping audio."""
    while isinstance(msg := sock.recv(timeout=timeout), bytes):
        pass
    return json.loads(msg)


def close_of(sock, timeout: float = 10) -> tuple[int, str, list]:
    """Receive until the server closes: (close code, reason, JSON messages received before it)."""
    seen = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            msg = sock.recv(timeout=timeout)
            if isinstance(msg, str):
                seen.append(json.loads(msg))
    assert closed.value.rcvd is not None, "the client, not the server, ended the connection"
    return closed.value.rcvd.code, closed.value.rcvd.reason, seen


def errors_counted(app, code: str) -> float:
    return app.state.ctx.metrics.registry.get_sample_value("nutq_errors_total", {"code": code}) or 0


def native_speak(sock, cid: str, text: str, tokens: int, close: bool = True) -> None:
    sock.send(json.dumps({"type": "config", "context_id": cid, "max_tokens": tokens, "seed": 1,
                          "timestamps": False}))
    sock.send(json.dumps({"type": "text", "context_id": cid, "text": text}))
    sock.send(json.dumps({"type": "close_context" if close else "flush", "context_id": cid}))


# ---------------------------------------------------------------------------------------- idle timeout


@pytest.mark.parametrize("protocol", ["native", "seed"])
def test_a_silent_socket_is_closed_after_the_idle_timeout(idle_server, protocol):
    _, url = idle_server
    with ws(url, protocol) as sock:
        t0 = time.monotonic()
        code, reason, seen = close_of(sock)
        waited = time.monotonic() - t0
    assert (code, seen) == (1000, []) and "idle" in reason
    assert IDLE_S * 0.9 <= waited < IDLE_S + 3, f"closed after {waited:.2f} s for an idle timeout of {IDLE_S} s"


def test_speaking_is_not_idle_and_the_idle_clock_starts_when_speech_ends(idle_server):
    app, url = idle_server
    with ws(url, "native") as sock:
        native_speak(sock, "a", LONG, SPEECH)
        t_sent = time.monotonic()
        done = recv_json(sock)  # a close instead would raise ConnectionClosed here
        spoke_for = time.monotonic() - t_sent
        assert done["type"] == "done" and done["reason"] == "closed", done
        assert spoke_for > 1.2 * IDLE_S, f"speech lasted only {spoke_for:.2f} s: the test proves nothing"
        # Idle means no message *and nothing spoken* for the timeout: it counts from the end of the
        # speech, not from the last message, so a client answering soon after the audio is not cut off.
        time.sleep(0.4 * IDLE_S)
        sock.send(json.dumps({"type": "cancel", "context_id": "gone"}))
        assert recv_json(sock)["code"] == "unknown_context"
        t0 = time.monotonic()
        code, reason, _ = close_of(sock)
        waited = time.monotonic() - t0
    assert code == 1000 and "idle" in reason
    assert IDLE_S * 0.9 <= waited < IDLE_S + 3
    wait_released(app)


# ---------------------------------------------------------------------------------------- message rate


def _rate_limited_reply(protocol: str, seen: list) -> dict:
    """The in-band notice each protocol gives before closing: (code, retryable) in its own shape."""
    assert len(seen) >= 1, f"{protocol}: closed without telling the client why"
    last = seen[-1]
    if protocol == "native":
        assert last["type"] == "error"
        return {"code": last["code"], "retryable": last["retryable"]}
    if protocol == "seed":
        assert last["status"] == "error"
        return {"code": last["error"]["code"], "retryable": last["error"]["retryable"]}
    assert last["type"] == "Warning"
    return {"code": last["code"].lower(), "retryable": None}


@pytest.mark.parametrize("protocol", ["native", "seed", "deepgram"])
def test_a_burst_over_the_message_rate_is_refused_and_closed_1008(strict_server, protocol):
    app, url = strict_server
    before = errors_counted(app, "rate_limited")
    with ws(url, protocol, KEYS[0]) as sock:
        if protocol == "deepgram":
            assert recv_json(sock)["type"] == "Metadata"
        # Cheap messages that each get an answer but start no speech: invalid JSON.
        for _ in range(30):
            try:
                sock.send("{")
            except ConnectionClosed:
                break  # the server may close while the burst is still being written
        code, reason, seen = close_of(sock)
    assert code == 1008 and "per second" in reason
    notice = _rate_limited_reply(protocol, seen)
    assert notice["code"] == "rate_limited" and notice["retryable"] in (True, None)
    # The burst allowance (2 x the rate) is honoured before the refusal: those messages were answered.
    assert len(seen) - 1 >= 2 * RATE - 1, f"only {len(seen) - 1} messages answered before the refusal"
    assert errors_counted(app, "rate_limited") == before + 1, "one violation, counted once"


def test_after_a_burst_messages_at_the_sustained_rate_are_not_refused(strict_server):
    _, url = strict_server
    with ws(url, "native", KEYS[0]) as sock:
        for i in range(2 * RATE - 1 + 4):  # the burst allowance all but spent, then paced a bit under the rate
            sock.send("{")
            assert recv_json(sock)["code"] == "invalid_json", f"message {i} refused"
            if i >= 2 * RATE - 1:
                time.sleep(1.2 / RATE)


# ---------------------------------------------------------------------------------------- frame size


@pytest.mark.parametrize("protocol", ["native", "seed", "deepgram"])
def test_a_frame_over_the_limit_is_refused_and_closed_1009(strict_server, protocol):
    app, url = strict_server
    with ws(url, protocol, KEYS[0]) as sock:
        if protocol == "deepgram":
            assert recv_json(sock)["type"] == "Metadata"
        sock.send("{" * MAX_FRAME)  # at the limit: an ordinary bad message, answered in-band
        reply = recv_json(sock)
        assert "too_large" not in json.dumps(reply).lower()
        sock.send("x" * (MAX_FRAME + 1))
        code, reason, seen = close_of(sock)
    assert code == 1009 and str(MAX_FRAME) in reason
    assert "message_too_large" in json.dumps(seen[-1]).lower()


def test_the_frame_limit_counts_utf8_bytes_not_characters(strict_server):
    _, url = strict_server
    arabic = "ب" * (MAX_FRAME // 2 + 10)  # fewer characters than the limit, more bytes (2 per letter)
    with ws(url, "native", KEYS[0]) as sock:
        sock.send(arabic)
        code, _, seen = close_of(sock)
    assert code == 1009 and seen[-1]["code"] == "message_too_large"


def test_with_uvicorns_own_limit_as_the_cli_sets_it_the_client_sees_a_bare_1009(tts):
    """`nutq serve` also passes max_frame_bytes to uvicorn (`ws_max_size`), whose WebSocket layer
    refuses a larger frame before the app sees it: the client gets close code 1009 but no
    `message_too_large` message. Frames at the limit still reach the app."""
    app = create_app(tts, ServeConfig(warmup=False, max_frame_bytes=MAX_FRAME))
    with running_server(app, ws_max_size=MAX_FRAME) as url:
        with ws(url.replace("http://", "ws://"), "native") as sock:
            sock.send("{" * MAX_FRAME)
            assert recv_json(sock)["code"] == "invalid_json"
            sock.send("x" * (MAX_FRAME + 1))
            code, _, seen = close_of(sock)
    assert code == 1009 and seen == []


# ---------------------------------------------------------------------------------------- admission


class Native:
    @staticmethod
    def start(url: str, key: str):
        """A socket whose stream is live (its first audio arrived)."""
        sock = ws(url, "native", key).__enter__()
        native_speak(sock, "long", LONG, ENDLESS, close=False)
        while not isinstance(msg := sock.recv(timeout=30), bytes):
            assert json.loads(msg)["type"] != "error", msg
        assert unpack_audio_frame(msg)[0] == "long"
        return sock

    @staticmethod
    def refusal(url: str, key: str) -> dict:
        """Ask for a short stream; the error it gets, on a connection that stays usable."""
        with ws(url, "native", key) as sock:
            native_speak(sock, "short", TEXT, SHORT)
            err = recv_json(sock)
            assert err["type"] == "error" and err["context_id"] == "short", err
            done = recv_json(sock)
            assert (done["type"], done["reason"]) == ("done", "error"), "the refused context ends"
            sock.send(json.dumps({"type": "cancel", "context_id": "nope"}))
            assert recv_json(sock)["code"] == "unknown_context", "the connection goes on"
        return {"code": err["code"], "retryable": err["retryable"]}


class Seed:
    @staticmethod
    def request(text: str, tokens: int) -> str:
        return json.dumps({"text": text, "seed": 1, "max_tokens": tokens})

    @staticmethod
    def start(url: str, key: str):
        sock = ws(url, "seed", key).__enter__()
        sock.send(Seed.request(LONG, ENDLESS))
        msg = sock.recv(timeout=30)
        assert isinstance(msg, bytes), msg
        return sock

    @staticmethod
    def refusal(url: str, key: str) -> dict:
        with ws(url, "seed", key) as sock:
            sock.send(Seed.request(TEXT, SHORT))
            reply = recv_json(sock)
            assert reply["status"] == "error", reply
            sock.send("{")
            assert recv_json(sock)["error"]["code"] == "invalid_json", "the socket stays usable"
        return {"code": reply["error"]["code"], "retryable": reply["error"]["retryable"]}


@pytest.mark.parametrize("proto", [Native, Seed], ids=["native", "seed"])
def test_streams_are_admitted_per_key_and_in_total(strict_server, proto):
    app, url = strict_server
    first = proto.start(url, KEYS[0])
    second = None
    try:
        assert proto.refusal(url, KEYS[0]) == {"code": "too_many_streams", "retryable": True}
        second = proto.start(url, KEYS[1])  # another key is admitted meanwhile
        assert app.state.ctx.limiter.active == 2
        assert proto.refusal(url, KEYS[2]) == {"code": "server_busy", "retryable": True}
    finally:
        for sock in (first, second):
            if sock is not None:
                sock.close()  # hanging up mid-stream gives the admission back
    wait_released(app)
