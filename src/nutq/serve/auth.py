"""Optional API keys, accepted in the header spellings clients use, and the client identity that
per-client limits count against.

The identity of a keyed client is a short hash of its key (never the key: identities reach logs
and metrics); without keys, it is the peer address.
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import HTTPConnection

from .errors import ApiError

__all__ = ["ACCEPTED_FORMS", "Authenticator"]

# Where clients put a key: OpenAI's SDK and most HTTP clients, Deepgram's plugins, ElevenLabs'.
_SCHEMES = ("bearer", "token")
_HEADER = "xi-api-key"
ACCEPTED_FORMS = ("Authorization: Bearer <key>", "Authorization: Token <key>", f"{_HEADER}: <key>")


def _presented_key(conn: HTTPConnection) -> str | None:
    auth = conn.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in _SCHEMES and value.strip():
            return value.strip()
    return conn.headers.get(_HEADER)


class Authenticator:
    """`identify(conn)` -> client id, raising 401 when keys are configured and none matches."""

    def __init__(self, keys: tuple[str, ...]):
        self._keys = [k.encode() for k in keys]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, conn: HTTPConnection) -> str:
        """Also records the id as `conn.state.client`, where the access log finds it."""
        client = self._identify(conn)
        conn.state.client = client
        return client

    def _identify(self, conn: HTTPConnection) -> str:
        if not self._keys:
            return f"addr:{conn.client.host}" if conn.client else "addr:unknown"
        given = _presented_key(conn)
        # Compare against every key so the time taken does not reveal which one came close.
        ok = False
        if given is not None:
            g = given.encode()
            for k in self._keys:
                ok |= hmac.compare_digest(g, k)
        if not ok:
            raise ApiError(401, f"missing or invalid API key; send it as {', '.join(ACCEPTED_FORMS[:-1])} "
                                f"or {ACCEPTED_FORMS[-1]}", code="invalid_api_key")
        return "key:" + hashlib.sha256(g).hexdigest()[:12]

    def dependency(self):
        """A FastAPI dependency for HTTP routes: sets `request.state.client` or raises 401."""

        async def check(conn: HTTPConnection) -> None:
            self.identify(conn)

        return check
