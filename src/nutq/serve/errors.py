"""HTTP errors in OpenAI's JSON shape, and the mapping from engine exceptions to them.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "voice", "code": "voice_not_found"}}

Every error a client can cause gets a status it can act on: 400 bad input, 401 no or wrong key,
403 over a quota, 404 unknown voice, 413 too large a body, 429 all streams busy (retryable, with
Retry-After), 500 our fault, 503 shutting down, 507 the voice store is full.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import BusyError, ClientError, NutqError, UnavailableError
from ..engine.voice_cache import UnknownVoiceError
from ..engine.voice_store_redis import VoiceStoreUnavailable
from ..text.diacritize import DiacritizerUnavailable
from .formats import UnsupportedFormat
from .logs import current_request_id

__all__ = ["ApiError", "api_error_from", "install_error_handlers", "ws_close_code"]

log = logging.getLogger(__name__)

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "invalid_request_error",
          404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
          429: "rate_limit_error", 503: "server_error", 507: "server_error"}
# Messages echo what the client sent (a voice id, a value): cut, so that a 100,000-character id
# does not come back in full in every error body and log line.
MAX_MESSAGE_CHARS = 300


class ApiError(NutqError):
    """An error answered to the client as-is."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 headers: dict[str, str] | None = None):
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[:MAX_MESSAGE_CHARS - 1] + "…"
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)

    @property
    def retryable(self) -> bool:
        """Worth retrying unchanged later: busy, draining, or our own transient failure."""
        return self.status in (429, 500, 503)


def ws_close_code(err: ApiError) -> int:
    """The WebSocket close code for an error that ends a connection (RFC 6455 / IANA registry):
    1008 policy violation (no or bad key), 1013 try again later (limits, draining), 1011 our fault,
    1003 unsupported data (anything else the client sent)."""
    if err.status == 401:
        return 1008
    if err.status in (429, 503):
        return 1013
    if err.status >= 500:
        return 1011
    return 1003


def api_error_from(e: Exception, retry_after_s: int = 1) -> ApiError:
    """The client-facing form of an exception raised while starting or running synthesis: nutq's
    client errors keep their message (400, 404, 429); anything else is our fault, logged with the
    request id (the log records carry it) and answered as a bare 500."""
    if isinstance(e, ApiError):
        return e
    if isinstance(e, UnknownVoiceError):
        return ApiError(404, str(e), code="voice_not_found", param="voice")
    if isinstance(e, VoiceStoreUnavailable):
        log.warning("%s", e)
        return ApiError(503, "the voice store is unavailable; retry shortly", code="voice_store_unavailable",
                        headers={"Retry-After": str(retry_after_s)})
    if isinstance(e, BusyError):
        return ApiError(429, f"server busy: {e}; retry shortly", code="server_busy",
                        headers={"Retry-After": str(retry_after_s)})
    if isinstance(e, DiacritizerUnavailable):
        return ApiError(400, f"diacritization is not available on this server: {e}", code="unsupported_option",
                        param="diacritize")
    if isinstance(e, UnavailableError):
        return ApiError(400, f"not available on this server: {e}", code="unsupported_option")
    if isinstance(e, UnsupportedFormat):
        return ApiError(400, str(e), code="unsupported_format", param="response_format")
    if isinstance(e, ClientError):  # bad text, language or voice options
        return ApiError(400, str(e), code="invalid_value")
    rid = current_request_id()
    log.error("unexpected error in request %s: %s: %s", rid, type(e).__name__, e, exc_info=e,
              extra={"request_id": rid})
    return ApiError(500, f"internal error (request {rid})" if rid else "internal error", code="internal_error")


def _validation_error(exc: RequestValidationError) -> ApiError:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    msg = first.get("msg", "invalid request")
    where = ".".join(loc)
    return ApiError(400, f"{where}: {msg}" if where else msg, code="invalid_value", param=where or None)


def install_error_handlers(app: FastAPI, metrics=None) -> None:
    """Every error answered in one JSON shape; with `metrics`, counted by code."""

    def answer(err: ApiError) -> JSONResponse:
        if metrics is not None:
            metrics.error(err)
        return err.response()

    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return answer(exc)

    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return answer(_validation_error(exc))

    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own 404/405 for unknown routes, in the same shape as ours.
        return answer(ApiError(exc.status_code, str(exc.detail), code="http_error"))

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        return answer(api_error_from(exc))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
