"""Request ids and access logs (`serve.logs`): echoed ids, one line per HTTP request and per
WebSocket connection, JSON lines with the fields operators filter on, and no keys or text in them.

The middleware is tested on a small Starlette app of its own (HTTP, WebSocket, failing routes) and
on the real app with API keys.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from urllib.parse import urlencode

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
ws_client = pytest.importorskip("websockets.sync.client")

from starlette.applications import Starlette  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route, WebSocketRoute  # noqa: E402

from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.serve.logs import JsonFormatter, RequestLogMiddleware, configure_logging, current_request_id  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import http_request, running_server  # noqa: E402

KEY = "logs-secret-key"
TEXT = "نص سري لا يسجل"


async def whoami(request):
    # the id is in the handler's context, and in worker threads started from it
    in_thread = await asyncio.to_thread(current_request_id)
    return JSONResponse({"id": current_request_id(), "in_thread": in_thread,
                         "state": request.scope["state"]["request_id"]})


async def boom(request):
    raise RuntimeError("handler failed")


async def echo(ws):
    await ws.accept()
    await ws.send_text(await ws.receive_text())
    await ws.close(code=4001)


async def refuse(ws):
    await ws.close(code=1008)


@pytest.fixture(scope="module")
def mini():
    routes = [Route("/whoami", whoami), Route("/boom", boom), WebSocketRoute("/echo", echo),
              WebSocketRoute("/refuse", refuse)]
    app = Starlette(routes=routes)
    app.add_middleware(RequestLogMiddleware)
    with running_server(app, ready_path="/whoami") as url:
        yield url


@pytest.fixture
def access(caplog):
    """The access records logged during a test."""
    caplog.set_level(logging.INFO, logger="nutq.access")
    return lambda: [r for r in caplog.records if r.name == "nutq.access"]


def test_a_request_id_is_made_or_kept_and_echoed(mini):
    status, head, body = http_request(mini, "GET", "/whoami")
    made = head["x-request-id"]
    assert status == 200 and len(made) == 32 and int(made, 16) >= 0
    assert json.loads(body) == {"id": made, "in_thread": made, "state": made}

    _, head, body = http_request(mini, "GET", "/whoami", headers={"X-Request-ID": "trace-42.a:b"})
    assert head["x-request-id"] == "trace-42.a:b" and json.loads(body)["id"] == "trace-42.a:b"

    for bad in ("x" * 129, "has space", "quote\"d", ""):
        _, head, _ = http_request(mini, "GET", "/whoami", headers={"X-Request-ID": bad})
        assert head["x-request-id"] != bad and len(head["x-request-id"]) == 32, f"{bad!r} was echoed"


def test_one_access_line_per_request_with_status_and_duration(mini, access):
    http_request(mini, "GET", "/whoami?text=" + "secret", headers={"X-Request-ID": "req-1"})
    status, _, _ = http_request(mini, "GET", "/boom", headers={"X-Request-ID": "req-2"})
    assert status == 500
    by_id = {r.request_id: r for r in access()}
    ok, failed = by_id["req-1"], by_id["req-2"]
    assert (ok.method, ok.path, ok.status) == ("GET", "/whoami", 200), "the query string must not be logged"
    assert ok.duration_ms >= 0 and "secret" not in ok.getMessage()
    assert (failed.path, failed.status) == ("/boom", 500)


def test_websocket_connections_get_an_id_and_one_line_when_they_end(mini, access):
    with ws_client.connect(mini.replace("http", "ws") + "/echo", additional_headers={"X-Request-ID": "ws-1"}) as ws:
        assert ws.response.headers["x-request-id"] == "ws-1"
        ws.send("hi")
        assert ws.recv() == "hi"
        with pytest.raises(Exception):
            ws.recv()  # closed by the server with 4001
    with pytest.raises(Exception):
        with ws_client.connect(mini.replace("http", "ws") + "/refuse", additional_headers={"X-Request-ID": "ws-2"}):
            pass
    records = {r.request_id: r for r in access()}
    assert (records["ws-1"].method, records["ws-1"].path, records["ws-1"].status, records["ws-1"].close_code) == \
        ("WS", "/echo", 101, 4001)
    assert records["ws-2"].status == 403, "a WebSocket refused before the handshake is logged as 403"


def test_json_lines_carry_the_fields_and_never_the_key_or_the_text(tiny_checkpoint, access):
    tts = TTS.from_local(tiny_checkpoint, max_sessions=1)
    with running_server(create_app(tts, ServeConfig(api_keys=(KEY,), warmup=False))) as url:
        body = {"model": "nutq", "input": TEXT, "voice": "default", "response_format": "pcm", "max_tokens": 2}
        status, head, _ = http_request(url, "POST", "/v1/audio/speech", json.dumps(body),
                                       {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
        assert status == 200
        assert http_request(url, "GET", "/v1/voices", headers={"xi-api-key": "wrong"})[0] == 401
        # the seed protocol: the text in a query string, and a WebSocket
        query = urlencode({"text": TEXT, "max_tokens": 2})
        assert http_request(url, "GET", f"/tts/stream?{query}", headers={"xi-api-key": KEY})[0] == 200
        with ws_client.connect(url.replace("http", "ws") + "/ws/tts",
                               additional_headers={"Authorization": f"Token {KEY}"}) as ws:
            ws.send(json.dumps({"text": TEXT, "max_tokens": 2}))
            while isinstance(reply := ws.recv(timeout=30), bytes):
                pass
            assert json.loads(reply)["status"] == "complete"
    fmt = JsonFormatter()
    lines = [fmt.format(r) for r in access()]
    docs = [json.loads(line) for line in lines]
    spoke = next(d for d in docs if d["path"] == "/v1/audio/speech")
    assert spoke["request_id"] == head["x-request-id"] and spoke["method"] == "POST" and spoke["status"] == 200
    assert spoke["client"].startswith("key:") and {"ts", "level", "logger", "msg", "duration_ms"} <= spoke.keys()
    refused = next(d for d in docs if d["path"] == "/v1/voices")
    assert refused["status"] == 401 and "client" not in refused
    query = next(d for d in docs if d["path"] == "/tts/stream")
    ws = next(d for d in docs if d["path"] == "/ws/tts")
    assert query["client"] == ws["client"] == spoke["client"], "one key, one client id, whatever the protocol"
    assert (ws["method"], ws["status"], ws["close_code"]) == ("WS", 101, 1000)
    text = "\n".join(lines)
    assert KEY not in text and TEXT not in text and "wrong" not in text


@pytest.fixture
def root_logging():
    """configure_logging changes the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_configure_logging_writes_one_line_per_record(root_logging, fmt):
    out = io.StringIO()
    configure_logging(fmt, stream=out)
    logging.getLogger("nutq.test").info("hello %s", "world")
    try:
        raise ValueError("bad")
    except ValueError:
        logging.getLogger("nutq.test").exception("failed")
    lines = out.getvalue().splitlines()
    if fmt == "json":
        docs = [json.loads(line) for line in lines]  # every line is one JSON object, tracebacks included
        assert docs[0]["msg"] == "hello world" and docs[0]["level"] == "INFO" and docs[0]["request_id"] is None
        assert docs[0]["ts"].endswith("Z") and docs[0]["logger"] == "nutq.test"
        assert "ValueError: bad" in docs[1]["exc"] and len(docs) == 2
    else:
        assert lines[0].endswith("INFO nutq.test [-] hello world")
    with pytest.raises(ValueError, match="json, text|text, json"):
        configure_logging("xml")
