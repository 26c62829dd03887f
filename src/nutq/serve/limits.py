"""Admission limits: concurrent streams in total and per client, and a per-connection message rate.

Both are plain objects owned by the app's `ServerContext` and touched only from the event loop,
so they need no locks. Refusals are `ApiError`s a client can act on: 429 with a Retry-After hint
(HTTP) or close code 1013 "try again later" (WebSocket) — see `errors.ws_close_code`.
"""

from __future__ import annotations

import time
from collections import Counter

from .errors import ApiError

__all__ = ["StreamLimiter", "StreamLease", "TokenBucket"]


class StreamLease:
    """One admitted stream; `release()` is idempotent so every exit path may call it."""

    def __init__(self, limiter: "StreamLimiter", client: str):
        self._limiter, self.client = limiter, client
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limiter._release(self.client)


class StreamLimiter:
    def __init__(self, total: int, per_client: int, retry_after_s: int = 1):
        self.total, self.per_client, self.retry_after_s = total, per_client, retry_after_s
        self._by_client: Counter[str] = Counter()
        self.active = 0

    def acquire(self, client: str) -> StreamLease:
        """Admit one more stream for `client` (a key id or address) or raise a retryable 429."""
        hint = {"Retry-After": str(self.retry_after_s)}
        # a per-client limit as large as the total is no limit of its own: a full server says so
        if self.per_client < self.total and self._by_client[client] >= self.per_client:
            raise ApiError(429, f"too many concurrent streams for this client (limit {self.per_client})",
                           code="too_many_streams", headers=hint)
        if self.active >= self.total:
            raise ApiError(429, f"server busy: all {self.total} streams in use; retry shortly",
                           code="server_busy", headers=hint)
        self._by_client[client] += 1
        self.active += 1
        return StreamLease(self, client)

    def _release(self, client: str) -> None:
        self.active -= 1
        self._by_client[client] -= 1
        if self._by_client[client] <= 0:
            del self._by_client[client]


class TokenBucket:
    """`rate` messages per second sustained, `burst` at once; `take()` is False when over."""

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic):
        self.rate, self.burst = rate, burst if burst is not None else 2 * rate
        self._clock = clock
        self._level, self._t = self.burst, clock()

    def take(self) -> bool:
        now = self._clock()
        self._level = min(self.burst, self._level + (now - self._t) * self.rate)
        self._t = now
        if self._level >= 1:
            self._level -= 1
            return True
        return False
