"""Streams cut off at the drain deadline (issue 15, point 5) must not look complete: over real
loopback sockets, an HTTP body ends without its terminating chunk, the native WebSocket's context
gets `error` then `done` with reason `server_draining`, the seed WebSocket an error with code
`server_draining`, and the metrics count all three cancelled, none completed.

The server is a `DrainingServer` (what `nutq serve` runs) in a thread; `begin_drain()` is what
SIGTERM does (tests/serve/test_drain.py sends the real signal to a real process).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import ExitStack
from http.client import IncompleteRead

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
from websockets.sync.client import connect as ws_connect  # noqa: E402

from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.serve.drain import DrainingServer  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import connect, get_json  # noqa: E402

ENDLESS = 1000
LONG = "هذا نص طويل جدا بلا أي علامة ترقيم يستمر ويستمر حتى النهاية البعيدة"


def test_streams_cut_off_by_the_drain_deadline_say_so(tiny_checkpoint):
    tts = TTS.from_local(tiny_checkpoint, max_sessions=3)
    app = create_app(tts, ServeConfig(warmup=False, max_new_tokens=ENDLESS, max_streams_per_key=3,
                                      drain_timeout_s=0.5))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = DrainingServer(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5), app.state.ctx)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    ws_url = url.replace("http://", "ws://")
    deadline = time.monotonic() + 60
    while True:
        try:
            if get_json(url, "/readyz")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)
    sockets = ExitStack()
    try:
        conn = connect(url)
        conn.request("POST", "/v1/audio/speech", json.dumps({
            "model": "nutq", "input": LONG, "voice": "default", "response_format": "pcm", "max_tokens": ENDLESS}),
            {"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 200 and r.read1(1 << 16)
        native = sockets.enter_context(ws_connect(ws_url + "/v1/tts/ws", proxy=None, open_timeout=30))
        native.send(json.dumps({"type": "config", "context_id": "c", "audio_mode": "binary", "max_tokens": ENDLESS}))
        native.send(json.dumps({"type": "text", "context_id": "c", "text": LONG}))
        native.send(json.dumps({"type": "flush", "context_id": "c"}))
        assert isinstance(native.recv(timeout=60), bytes)
        seed = sockets.enter_context(ws_connect(ws_url + "/ws/tts", proxy=None, open_timeout=30))
        seed.send(json.dumps({"text": LONG, "max_tokens": ENDLESS}))
        assert isinstance(seed.recv(timeout=60), bytes)

        server.begin_drain()

        with pytest.raises(IncompleteRead):
            r.read()  # the transfer ends without its terminating chunk
        conn.close()
        native_msgs = []
        while not native_msgs or native_msgs[-1]["type"] != "done":
            if isinstance(m := native.recv(timeout=30), str) and json.loads(m)["type"] != "timestamps":
                native_msgs.append(json.loads(m))
        assert [m["type"] for m in native_msgs] == ["error", "done"], native_msgs
        assert native_msgs[0]["code"] == "server_draining" and native_msgs[0]["retryable"]
        assert native_msgs[1]["reason"] == "server_draining"
        while isinstance(reply := seed.recv(timeout=30), bytes):
            pass
        reply = json.loads(reply)
        assert reply["status"] == "error" and reply["error"]["code"] == "server_draining", reply
    finally:
        sockets.close()
        server.begin_drain()
        thread.join(timeout=30)
        sock.close()
    assert not thread.is_alive()
    registry = app.state.ctx.metrics.registry
    for protocol in ("openai", "native", "seed"):
        count = lambda outcome: registry.get_sample_value("nutq_streams_total",  # noqa: E731
                                                          {"protocol": protocol, "outcome": outcome}) or 0
        assert (count("cancelled"), count("completed")) == (1, 0), protocol

