"""`BodyGuard`: what every request with a body goes through before any byte of it is read.

1. Authentication, when keys are configured: FastAPI reads and parses a JSON body before it runs a
   route's dependencies, so without this an unauthenticated client could make the server read
   (and hold) a body of any size before its 401.
2. A declared `Content-Length` over the path's limit is refused with 413 before reading.
3. A chunked body (or one that outgrows its declared length) is cut off at the limit: the route
   sees `BodyTooLarge` from `receive`, whatever it answers is dropped, and the client gets the 413.

Refusals are answered in the protocol's error shape (`respond`) with `Connection: close`, since the
rest of the body is never read. Pure ASGI, so streamed responses pass through untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError

__all__ = ["BodyGuard", "BodyLimit", "BodyTooLarge"]


@dataclass(frozen=True)
class BodyLimit:
    """The most bytes a path's body may have, and how a refusal names itself: `what` and
    `named_limit` are what the message says (an upload's limit is the clip's, without the room
    the multipart framing needs)."""

    max_bytes: int
    code: str = "body_too_large"
    param: str | None = None
    what: str = "request body"
    named_limit: int | None = None

    def error(self, size: int | None) -> "BodyTooLarge":
        got = f" of {size} bytes" if size is not None else ""
        limit = self.named_limit or self.max_bytes
        return BodyTooLarge(413, f"{self.what}{got} exceeds the limit of {limit} bytes", code=self.code,
                            param=self.param)


class BodyTooLarge(ApiError):
    """The 413 of a body past its limit; also what the guarded `receive` raises then, so that a
    route that answers every exception in its own shape answers this one as the 413 it is."""


def _declared_length(scope: Scope) -> tuple[int | None, bool]:
    """(Content-Length or None, whether the request has a body at all)."""
    length, chunked = None, False
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                length = int(value)
            except ValueError:
                length = None  # h11/httptools refuse malformed lengths before the app sees them
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked or bool(length)


class BodyGuard:
    def __init__(self, app: ASGIApp, *, auth, limit_for: Callable[[str], BodyLimit],
                 respond: Callable[[Scope, ApiError], Response], metrics):
        self.app, self.auth, self.limit_for, self.respond, self.metrics = app, auth, limit_for, respond, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared, has_body = _declared_length(scope)
        if not has_body:
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        try:
            if self.auth.enabled:
                self.auth.identify(HTTPConnection(scope))
            if declared is not None and declared > limit.max_bytes:
                raise limit.error(declared)
        except ApiError as e:
            await self._refuse(scope, receive, send, e)
            return

        seen = 0
        refused: BodyTooLarge | None = None
        started = False

        async def guarded_receive() -> Message:
            nonlocal seen, refused
            if refused is not None:
                raise refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit.max_bytes:
                    refused = limit.error(None)
                    raise refused
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused is not None and not started:
                return  # the route's answer to a body it could not read: the 413 goes instead
            started = True
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:  # noqa: BLE001 - BodyTooLarge, or how a route failed on the body it was cut off from
            if refused is None:
                raise
        if refused is not None and not started:
            await self._refuse(scope, receive, send, refused)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, err: ApiError) -> None:
        self.metrics.error(err)
        response = self.respond(scope, err)
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
