"""Request ids, one access log line per request, and the log formats of `nutq serve`.

`RequestLogMiddleware` (pure ASGI, so streamed bodies and WebSockets pass through untouched) gives
every HTTP request and WebSocket connection a request id: the client's `X-Request-ID` when it is a
plausible id (1-128 characters of `A-Za-z0-9._:-`), else a new random one. The id is

* sent back in the `X-Request-ID` response header (on a WebSocket, in the handshake response),
* in `current_request_id()` for the handler's code (a contextvar: also seen by `asyncio.to_thread`),
  and in `scope["state"]["request_id"]` for protocols that report it in-band,
* on every log record made while handling it (see `RequestIdFilter`).

When the request ends (an HTTP response, a WebSocket connection closing) one line goes to the
`nutq.access` logger with method, path, status, duration and the client id set by authentication
(a key's hash or the peer address). The query string is never logged (`GET /tts/stream` carries the
text there), nor any header: keys and text stay out of the logs.

`configure_logging("json" | "text")` sets up the process's root logger; it is for the CLI, never
called on import or by `create_app`. Its handler also

* drops uvicorn's own WebSocket access lines (`"WebSocket /path?query" [accepted]`): they carry the
  query string, where WebSocket clients put keys (`?api_key=`) and the seed protocol its text; the
  access line above replaces them;
* escapes control characters in every text line's message (a path with `%0A` must not forge a
  line of its own); JSON lines are escaped by JSON itself.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import datetime, timezone

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestLogMiddleware", "RequestIdFilter", "JsonFormatter", "configure_logging", "current_request_id",
           "REQUEST_ID_HEADER", "LOG_FORMATS"]

REQUEST_ID_HEADER = "x-request-id"
LOG_FORMATS = ("text", "json")
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_MAX_PATH = 256  # a path is logged, not stored: a client cannot make lines arbitrarily long
# Fields an access record carries (as record attributes), in the order the JSON line lists them.
_FIELDS = ("method", "path", "status", "close_code", "duration_ms", "client")

_request_id: ContextVar[str | None] = ContextVar("nutq_request_id", default=None)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")

access_log = logging.getLogger("nutq.access")


def current_request_id() -> str | None:
    """The id of the request being handled in this context (None outside requests)."""
    return _request_id.get()


def _request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            given = value.decode("latin-1").strip()
            if _VALID_ID.fullmatch(given):
                return given
            break  # unusable (too long, odd characters): a fresh one is safer to log and echo
    return uuid.uuid4().hex


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = _request_id_from(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        header = (REQUEST_ID_HEADER.encode(), rid.encode())
        http = scope["type"] == "http"
        seen: dict = {"status": None, "close_code": None}

        async def send_with_id(message: Message) -> None:
            kind = message["type"]
            if kind in ("http.response.start", "websocket.accept", "websocket.http.response.start"):
                message = {**message, "headers": [*message.get("headers", ()), header]}
                seen["status"] = message.get("status", 101)
            elif kind == "websocket.close":
                seen["close_code"] = message.get("code", 1000)
                if seen["status"] is None:
                    seen["status"] = 403  # refused before the handshake completed
            await send(message)

        async def receive_noting_close() -> Message:
            message = await receive()
            if message["type"] == "websocket.disconnect" and seen["close_code"] is None:
                seen["close_code"] = message.get("code", 1005)
            return message

        token = _request_id.set(rid)
        t0 = time.perf_counter()
        try:
            await self.app(scope, receive if http else receive_noting_close, send_with_id)
        except BaseException:
            if seen["status"] is None:
                seen["status"] = 500  # the error handler outside this middleware answers it
            raise
        finally:
            self._log(scope, rid, state, seen, (time.perf_counter() - t0) * 1000)
            _request_id.reset(token)

    @staticmethod
    def _log(scope: Scope, rid: str, state: dict, seen: dict, ms: float) -> None:
        method = scope.get("method", "GET") if scope["type"] == "http" else "WS"
        path = scope.get("path", "")[:_MAX_PATH]
        status, code = seen["status"], seen["close_code"]
        tail = f" close={code}" if code is not None else ""
        access_log.info("%s %s %s%s %.1f ms", method, path, status, tail, ms,
                        extra={"request_id": rid, "method": method, "path": path, "status": status, "close_code": code,
                               "duration_ms": round(ms, 1), "client": state.get("client")})


class RequestIdFilter(logging.Filter):
    """Puts the current request id (or None) on every record as `record.request_id`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = _request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id, then the access fields that
    the record has, and `exc` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        doc = {"ts": ts.replace("+00:00", "Z"), "level": record.levelname, "logger": record.name,
               "msg": record.getMessage(), "request_id": getattr(record, "request_id", None)}
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def _escape_controls(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else
                        f"\\u{ord(m.group()):04x}", text)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.rid = getattr(record, "request_id", None) or "-"
        message = record.getMessage()
        safe = _escape_controls(message)
        if safe != message:  # a copy: other handlers of the record still see it as it was
            record = logging.makeLogRecord({**record.__dict__, "msg": safe, "args": None})
        return super().format(record)


class _NoWebSocketAccessLines(logging.Filter):
    """Drops uvicorn's WebSocket access lines, which log the query string (see the module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name.startswith("uvicorn") and isinstance(record.msg, str)
                    and '"WebSocket %s"' in record.msg)


def configure_logging(fmt: str = "text", level: int | str = logging.INFO, stream=None) -> logging.Handler:
    """Route every log record of the process (uvicorn's included, when it is started with
    `log_config=None`) through one handler on `stream` (stderr) in `fmt`; returns the handler."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(_NoWebSocketAccessLines())
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         _TextFormatter("%(asctime)s %(levelname)s %(name)s [%(rid)s] %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return handler
