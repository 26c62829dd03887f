"""What every WebSocket protocol here needs around `receive` and `send`: the idle timeout, the
message-rate limit, the frame-size limit, the send timeout and authentication, each answered the
same way.

A protocol handler makes one `WsReceiver` per connection and calls `next()` for each client
message; it gets text or bytes, or `None` when the connection is over (client closed, idle, too
slow a reader, or closed here for a violation after the protocol's error message was sent via
`on_error`). It sends with `send()`: a send that cannot complete within `send_timeout_s` (the
client stopped reading and the socket's buffers are full) raises `SlowConsumer`, after the
connection was closed with 1008 and `next()` made to return None, so that the protocol's own
cleanup cancels its streams and frees their slots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..errors import NutqError
from .context import ServerContext
from .errors import ApiError, ws_close_code
from .limits import TokenBucket

__all__ = ["WsReceiver", "SlowConsumer", "authenticate_ws", "close_ws"]

ErrorSink = Callable[[ApiError], Awaitable[None]]
# A close frame waits behind unsent data like any frame: a reader that is not reading gets it
# only if it resumes soon; after this the connection is left to the server to drop.
_CLOSE_WAIT_S = 1.0


class SlowConsumer(NutqError):
    """The client accepted nothing for the send timeout; the connection is closed."""


async def close_ws(ws: WebSocket, code: int = 1000, reason: str = "") -> None:
    """Close if still open (the client may already be gone: nothing to do then)."""
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:
            # close reasons are limited to 123 bytes
            await asyncio.wait_for(ws.close(code=code, reason=reason[:120]), _CLOSE_WAIT_S)
        except (RuntimeError, OSError):  # TimeoutError included
            pass


async def authenticate_ws(ws: WebSocket, on_error: ErrorSink) -> str | None:
    """The client id for this (accepted) socket, or None after reporting 401 and closing 1008."""
    try:
        return ws.app.state.auth.identify(ws)
    except ApiError as e:
        ws.app.state.ctx.metrics.error(e)
        await on_error(e)
        await close_ws(ws, ws_close_code(e), e.message)
        return None


class WsReceiver:
    def __init__(self, ws: WebSocket, ctx: ServerContext, on_error: ErrorSink, busy: Callable[[], bool]):
        """`busy()` says whether the connection is still speaking: it is not idle while it is."""
        cfg = ctx.config
        self.ws, self.ctx, self.on_error, self.busy = ws, ctx, on_error, busy
        self.bucket = TokenBucket(cfg.max_messages_per_s)
        self.idle_timeout, self.max_bytes = cfg.idle_timeout_s, cfg.max_frame_bytes
        self.send_timeout = cfg.send_timeout_s
        self._stopped = asyncio.Event()

    async def send(self, payload: str | bytes) -> None:
        """Send one message, or raise `SlowConsumer` (connection closed) after `send_timeout_s`.
        Starlette's WebSocketDisconnect / RuntimeError for a closed socket pass through."""
        if self._stopped.is_set():
            raise SlowConsumer("the connection was closed: its client stopped reading")
        sending = self.ws.send_bytes(payload) if isinstance(payload, bytes) else self.ws.send_text(payload)
        try:
            await asyncio.wait_for(sending, self.send_timeout)
        except TimeoutError:
            self.ctx.metrics.slow_consumers.labels("websocket").inc()
            self._stopped.set()
            await close_ws(self.ws, 1008, f"slow consumer: no data accepted for {self.send_timeout:g} s")
            raise SlowConsumer(f"client accepted no data for {self.send_timeout:g} s") from None

    async def next(self) -> str | bytes | None:
        while True:
            msg = await self._receive()
            if msg is None or msg["type"] == "websocket.disconnect":
                return None
            data = msg.get("text")
            if data is None:
                data = msg.get("bytes") or b""
            size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8"))  # the limit is in bytes
            if size > self.max_bytes:
                await self._violation(ApiError(400, f"message of {size} bytes exceeds the limit of "
                                                    f"{self.max_bytes}", code="message_too_large"), 1009)
                return None
            if not self.bucket.take():
                await self._violation(ApiError(429, f"more than {self.ctx.config.max_messages_per_s:g} messages "
                                                    "per second", code="rate_limited"), 1008)
                return None
            return data

    async def _receive(self) -> dict | None:
        """The next ASGI message; None when the client is gone, or once nothing was received and
        nothing spoken for the idle timeout (the socket is closed then).

        The idle clock starts at the later of this call and the end of speech, so a client is never
        cut off just after its audio. While `busy()`, it is polled every quarter timeout: an idle
        close comes one to one and a quarter timeouts after speech ends."""
        loop = asyncio.get_running_loop()
        idle_since = None if self.busy() else loop.time()
        stopped = asyncio.ensure_future(self._stopped.wait())
        try:
            while True:
                if idle_since is None:
                    wait = self.idle_timeout / 4
                else:
                    wait = idle_since + self.idle_timeout - loop.time()
                    if wait <= 0:
                        await close_ws(self.ws, 1000, f"idle for {self.idle_timeout:g} s")
                        return None
                receiving = asyncio.ensure_future(self.ws.receive())
                await asyncio.wait((receiving, stopped), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if stopped.done():  # closed by `send` for a slow consumer
                    receiving.cancel()
                    return None
                if receiving.done():
                    try:
                        return receiving.result()
                    except (WebSocketDisconnect, RuntimeError):
                        return None
                receiving.cancel()
                if self.busy():
                    idle_since = None
                elif idle_since is None:
                    idle_since = loop.time()
        finally:
            stopped.cancel()

    async def _violation(self, err: ApiError, code: int) -> None:
        self.ctx.metrics.error(err)
        await self.on_error(err)
        await close_ws(self.ws, code, err.message)
