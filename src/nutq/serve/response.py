"""`LiveAudioResponse`: bytes streamed as the engine makes them, generation stopped on disconnect.

Starlette's `StreamingResponse` notices a vanished client only when its next write fails (ASGI
spec >= 2.4) and leaves the body iterator suspended, so the engine would keep a KV slot until
the next chunk and the iterator until garbage collection. This response also listens for
`http.disconnect` while streaming and cancels its stream on every way out (finished, failed or
abandoned), then tells it that the client has had everything it will get (`LiveStream.told`:
what a drain waits for before shutdown closes the connections).

Two ways out leave the body unterminated (no final empty chunk), so that the client sees an
incomplete transfer instead of a short but seemingly complete file: the stream failing or being
aborted part-way (the drain deadline), and a client that accepts no bytes for the server's
`send_timeout_s` (it stopped reading: its stream is cancelled and its slot freed instead of
being held for as long as the client likes; counted in `nutq_slow_consumers_total`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import ApiError

if TYPE_CHECKING:
    from .context import LiveStream

__all__ = ["LiveAudioResponse"]

log = logging.getLogger(__name__)


class LiveAudioResponse(Response):
    def __init__(self, body: AsyncIterator[bytes], *, media_type: str, stream: LiveStream,
                 headers: dict[str, str] | None = None):
        # Response.__init__ would declare Content-Length: 0; without a body attribute,
        # init_headers leaves the length out and uvicorn sends the body chunked.
        self.status_code = 200
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)
        self._body = body
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        done = asyncio.Event()

        async def watch_disconnect() -> None:
            while not done.is_set():
                if (await receive())["type"] == "http.disconnect":
                    self._stream.cancel()  # stops generation before its next decode step
                    return

        ctx = scope["app"].state.ctx
        timeout = ctx.config.send_timeout_s

        async def write(message) -> None:
            # The server's send waits while the socket's buffer is full: bounded, or a client that
            # never reads would hold its stream (and KV slot) forever.
            await asyncio.wait_for(send(message), timeout)

        watcher = asyncio.create_task(watch_disconnect())
        try:
            await write({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for piece in self._body:
                if watcher.done():
                    break
                if piece:
                    await write({"type": "http.response.body", "body": piece, "more_body": True})
            else:
                await write({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:  # before OSError, of which it is a subclass
            ctx.metrics.slow_consumers.labels("http").inc()
            log.warning("client accepted no audio for %g s: stream cancelled, response cut off", timeout)
        except OSError:  # the client went away mid-write
            pass
        except ApiError as e:  # aborted (drain deadline) or failed part-way: the body stays unterminated
            log.warning("audio stream cut off after the response started: %s", e.message)
        except Exception:  # noqa: BLE001 - headers are out; all we can do is cut the response short
            log.exception("audio stream failed after the response started")
        finally:
            done.set()
            watcher.cancel()
            self._stream.cancel()
            try:
                aclose = getattr(self._body, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                self._stream.told()  # the body is complete, or cut off: nothing more goes out
