"""HTTP side of the server: OpenAI-compatible streaming synthesis and the voices API, async
(`AsyncHttp`) and blocking (`Http`), both on httpx. Errors come back as `NutqError` with the
server's code, message, param and HTTP status."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import httpx

from .errors import NutqError

__all__ = ["AsyncHttp", "Http", "http_url"]


def http_url(url: str) -> str:
    """The server's HTTP base for an address given as http(s):// or ws(s)://."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"ws": "http", "wss": "https", "http": "http", "https": "https"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a server address: {url!r}")
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def _speech_body(text: str, voice: str, response_format: str, extra: dict) -> dict:
    if not text:
        raise ValueError("text must not be empty")
    # `model` is required by the OpenAI shape; the server serves one model whatever it is called
    return {"model": "nutq", "input": text, "voice": voice, "response_format": response_format, **extra}


def _voice_form(clip, voice_id: str | None, exaggeration: float | None) -> tuple[dict, dict]:
    if isinstance(clip, (str, os.PathLike)):
        with open(clip, "rb") as f:
            data, name = f.read(), os.path.basename(clip)
    elif isinstance(clip, (bytes, bytearray)):
        data, name = bytes(clip), "clip.wav"
    else:
        raise TypeError("clip must be a file path or bytes")
    fields = {k: str(v) for k, v in (("id", voice_id), ("exaggeration", exaggeration)) if v is not None}
    return fields, {"file": (name, data)}


def _check(r: httpx.Response) -> None:
    if r.status_code >= 400:
        raise NutqError.from_http(r.status_code, r.read())


class AsyncHttp:
    """`async with AsyncHttp("http://127.0.0.1:8000", api_key=...) as http:`"""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None, timeout_s: float = 60.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=http_url(url), headers=headers, timeout=timeout_s)

    async def __aenter__(self) -> "AsyncHttp":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def stream_speech(self, text: str, *, voice: str = "default", response_format: str = "pcm",
                            **extra) -> AsyncIterator[bytes]:
        """`POST /v1/audio/speech`, yielding the encoded audio as the server streams it. `extra`:
        nutq's extensions (language, seed, max_tokens, sample_rate, ...)."""
        async with self._http.stream("POST", "/v1/audio/speech",
                                     json=_speech_body(text, voice, response_format, extra)) as r:
            if r.status_code >= 400:
                raise NutqError.from_http(r.status_code, await r.aread())
            async for chunk in r.aiter_bytes():
                yield chunk

    async def list_voices(self) -> list[dict]:
        r = await self._http.get("/v1/voices")
        _check(r)
        return r.json()["data"]

    async def upload_voice(self, clip, *, voice_id: str | None = None, exaggeration: float | None = None) -> dict:
        """Register a voice from a reference clip (path or bytes: WAV, FLAC, MP3 or Ogg)."""
        data, files = _voice_form(clip, voice_id, exaggeration)
        r = await self._http.post("/v1/voices", data=data, files=files)
        _check(r)
        return r.json()

    async def delete_voice(self, voice_id: str) -> None:
        _check(await self._http.delete(f"/v1/voices/{voice_id}"))


class Http:
    """The blocking twin of `AsyncHttp`."""

    def __init__(self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None, timeout_s: float = 60.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=http_url(url), headers=headers, timeout=timeout_s)

    def __enter__(self) -> "Http":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def stream_speech(self, text: str, *, voice: str = "default", response_format: str = "pcm",
                      **extra) -> Iterator[bytes]:
        with self._http.stream("POST", "/v1/audio/speech", json=_speech_body(text, voice, response_format, extra)) as r:
            _check(r)
            yield from r.iter_bytes()

    def list_voices(self) -> list[dict]:
        r = self._http.get("/v1/voices")
        _check(r)
        return r.json()["data"]

    def upload_voice(self, clip, *, voice_id: str | None = None, exaggeration: float | None = None) -> dict:
        data, files = _voice_form(clip, voice_id, exaggeration)
        r = self._http.post("/v1/voices", data=data, files=files)
        _check(r)
        return r.json()

    def delete_voice(self, voice_id: str) -> None:
        _check(self._http.delete(f"/v1/voices/{voice_id}"))
