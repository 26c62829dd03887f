"""Typed errors: every failure the server reports, and a lost connection, is a `NutqError` with
the protocol's stable `code`, its `message` and whether retrying unchanged may succeed."""

from __future__ import annotations

__all__ = ["NutqError", "ConnectionLost", "RETRYABLE_CLOSE_CODES"]

# WebSocket close codes after which the same requests may succeed on a new connection:
# 1001 going away, 1006 dropped without a close frame, 1011 server error, 1012 service restart
# (uvicorn's shutdown after a drain), 1013 try again later (busy, draining).
RETRYABLE_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013})


class NutqError(Exception):
    """An error from the server (`error` message or HTTP error body) or from the client itself."""

    def __init__(self, code: str, message: str, *, retryable: bool = False, context_id: str | None = None,
                 param: str | None = None, status: int | None = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.retryable = code, message, retryable
        self.context_id, self.param, self.status = context_id, param, status

    @classmethod
    def from_message(cls, msg: dict) -> "NutqError":
        """From a native-protocol `error` message."""
        return cls(msg.get("code") or "error", msg.get("message", ""), retryable=bool(msg.get("retryable")),
                   context_id=msg.get("context_id"), param=msg.get("param"))

    @classmethod
    def from_http(cls, status: int, body: bytes) -> "NutqError":
        """From an HTTP error response (`{"error": {"message", "code", "param", ...}}`)."""
        import json

        try:
            err = json.loads(body)["error"]
            code, message, param = err.get("code") or f"http_{status}", err.get("message", ""), err.get("param")
        except (ValueError, KeyError, TypeError):
            code, message, param = f"http_{status}", body[:200].decode("utf-8", "replace"), None
        return cls(code, message, retryable=status in (429, 500, 502, 503, 504), param=param, status=status)


class ConnectionLost(NutqError):
    """The WebSocket closed while contexts were open and was not (or could not be) reopened."""

    def __init__(self, close_code: int | None, reason: str = "", *, retryable: bool | None = None):
        code = close_code if close_code is not None else 1006
        super().__init__("connection_closed", f"WebSocket closed with {code}" + (f": {reason}" if reason else ""),
                         retryable=code in RETRYABLE_CLOSE_CODES if retryable is None else retryable)
        self.close_code = code
