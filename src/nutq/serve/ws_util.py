"""What every WebSocket protocol here needs around `receive`: the idle timeout, the message-rate
limit, the frame-size limit and authentication, each answered the same way.

A protocol handler makes one `WsReceiver` per connection and calls `next()` for each client
message; it gets text or bytes, or `None` when the connection is over (client closed, idle, or
closed here for a violation after the protocol's error message was sent via `on_error`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from .context import ServerContext
from .errors import ApiError, ws_close_code
from .limits import TokenBucket

__all__ = ["WsReceiver", "authenticate_ws", "close_ws"]

ErrorSink = Callable[[ApiError], Awaitable[None]]


async def close_ws(ws: WebSocket, code: int = 1000, reason: str = "") -> None:
    """Close if still open (the client may already be gone: nothing to do then)."""
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:
            await ws.close(code=code, reason=reason[:120])  # close reasons are limited to 123 bytes
        except (RuntimeError, OSError):
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
        while True:
            if idle_since is None:
                wait = self.idle_timeout / 4
            else:
                wait = idle_since + self.idle_timeout - loop.time()
                if wait <= 0:
                    await close_ws(self.ws, 1000, f"idle for {self.idle_timeout:g} s")
                    return None
            try:
                return await asyncio.wait_for(self.ws.receive(), timeout=wait)
            except asyncio.TimeoutError:
                if self.busy():
                    idle_since = None
                elif idle_since is None:
                    idle_since = loop.time()
            except (WebSocketDisconnect, RuntimeError):
                return None

    async def _violation(self, err: ApiError, code: int) -> None:
        self.ctx.metrics.error(err)
        await self.on_error(err)
        await close_ws(self.ws, code, err.message)
