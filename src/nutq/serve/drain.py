"""Graceful drain: on SIGTERM or SIGINT, finish (or, after a deadline, cancel) running streams
before uvicorn shuts down.

`DrainingServer` is a `uvicorn.Server` whose first signal does not stop the server but starts a
drain of its `ServerContext`:

1. `ctx.draining = True`: /readyz answers 503 (load balancers stop sending traffic) and new
   streams are refused with a retryable 503 (HTTP, with Retry-After) or close 1013 (WebSocket),
   while the listening socket stays open so those refusals reach clients;
2. running streams go on until none is left, or until `drain_timeout_s` has passed, when the rest
   are aborted (each stops within one decode step and gives its KV slot back) so that clients can
   tell their audio is incomplete: an HTTP body ends without its terminating chunk, a WebSocket
   gets its protocol's error (code `server_draining`), and metrics count the streams cancelled;
3. then uvicorn's own shutdown runs: connections are closed, the lifespan ends, and the process
   exits with status 0.

A second signal cuts the wait short (cancel now, then shut down); a third forces uvicorn's exit
without waiting for connections. Uvicorn would otherwise re-raise a handled signal after shutting
down, making the process die by the signal; a drained server exits normally instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import FrameType

import uvicorn

from .context import ServerContext
from .errors import ApiError

__all__ = ["DrainingServer", "cancel_streams"]

log = logging.getLogger(__name__)

# After the drain, uvicorn's shutdown waits for connections to close: bounded, so a client that
# stopped reading cannot hold the process (uvicorn.Config.timeout_graceful_shutdown).
SHUTDOWN_GRACE_S = 5.0


async def cancel_streams(ctx: ServerContext, grace_s: float = SHUTDOWN_GRACE_S) -> int:
    """Cancel every running stream and wait until each has let go of its session; also catches
    streams that were still starting (admitted, not yet live) for up to `grace_s`. Returns how many
    were cancelled."""
    aborted: list = []
    deadline = time.monotonic() + grace_s
    while ctx.live or ctx.limiter.active:
        live = list(ctx.live)
        for stream in live:
            stream.abort(_cut_off())  # all at once: each stops within one decode step
        aborted += live
        # Let each protocol handler take the abort, tell its client (error, `done`, a cut-off body)
        # and close its stream itself: shutting down first would close WebSockets with 1012 before
        # those last messages went out. Streams still open after the grace are closed here.
        while any(s in ctx.live for s in live) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for result in await asyncio.gather(*(s.aclose() for s in live), return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("a cancelled stream failed while closing: %r", result)
        if time.monotonic() >= deadline:
            break
        if not live:
            await asyncio.sleep(0.02)  # a stream between admission and its first chunk
    if aborted:
        # A handler lets go of its stream (leaving ctx.live) before it sends its client the last
        # messages (error, `done`, the end of a body): wait until each says it has (`told`), so
        # that shutdown does not close the sockets with 1012 first; bounded by the same grace.
        waits = [asyncio.ensure_future(s.wait_told()) for s in aborted]
        _, late = await asyncio.wait(waits, timeout=max(deadline - time.monotonic(), 0.0))
        for w in late:
            w.cancel()
        if late:
            log.warning("%d cancelled streams did not tell their clients within %g s", len(late), grace_s)
    return len(aborted)


def _cut_off() -> ApiError:
    return ApiError(503, "server is shutting down: this stream was cut off before its end; retry on another "
                         "instance", code="server_draining")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, ctx: ServerContext):
        super().__init__(config)
        self.ctx = ctx
        self._signals = 0
        self._deadline: float | None = None  # set when draining; 0 = cancel now
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler between two bytecodes of the event loop's thread: only plain
        # assignments here, the work happens in `on_tick` on the loop. Deliberately not recorded in
        # `_captured_signals`: uvicorn would re-raise the signal after shutdown (see module doc).
        self._signals += 1
        if self._signals == 1:
            self.begin_drain()
        elif self._signals == 2:
            self._deadline = 0.0
        else:
            self.should_exit = self.force_exit = True

    def begin_drain(self) -> None:
        """Start draining (what the first SIGTERM/SIGINT does); safe to call from any thread."""
        self.ctx.draining = True
        self._deadline = time.monotonic() + self.ctx.config.drain_timeout_s

    async def on_tick(self, counter: int) -> bool:
        if await super().on_tick(counter):
            return True
        if self._deadline is None:
            return False
        ctx = self.ctx
        if not self._announced:
            self._announced = True
            log.info("draining: %d streams running; new ones are refused; waiting up to %g s",
                     len(ctx.live), ctx.config.drain_timeout_s)
        if not ctx.live and not ctx.limiter.active and not ctx.telling:
            # `telling`: a finished stream's handler may still be sending its last message
            log.info("drained: no streams running; shutting down")
            return True
        if time.monotonic() >= self._deadline:
            n = await cancel_streams(ctx)
            log.warning("drain deadline reached: cancelled %d running streams; shutting down", n)
            return True
        return False
