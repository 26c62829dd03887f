"""Optional API keys: a FastAPI dependency that accepts the header spellings clients use."""

from __future__ import annotations

import hmac

from fastapi import Request

from .errors import ApiError

__all__ = ["key_checker"]


def _presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("bearer", "token") and value.strip():
            return value.strip()
    return request.headers.get("xi-api-key")


def key_checker(keys: tuple[str, ...]):
    """A dependency that raises 401 unless the request carries one of `keys` (no-op without keys)."""
    encoded = [k.encode() for k in keys]

    async def check(request: Request) -> None:
        if not encoded:
            return
        given = _presented_key(request)
        # Compare against every key so the time taken does not reveal which one came close.
        ok = False
        if given is not None:
            g = given.encode()
            for k in encoded:
                ok |= hmac.compare_digest(g, k)
        if not ok:
            raise ApiError(401, "missing or invalid API key (send Authorization: Bearer <key>)",
                           code="invalid_api_key")

    return check
