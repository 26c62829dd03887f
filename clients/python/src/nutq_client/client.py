"""Async client of nutq's native WebSocket (`/v1/tts/ws`, docs/protocols/native.md).

One `Client` is one connection carrying many `Context`s (utterances). Text goes in piece by piece
(`send_text`), `flush()` speaks what is pending, `close()` ends the context after its audio,
`cancel()` stops it at once (barge-in); `async for event in ctx` yields `Audio`, `Timestamps`,
`Flushed` and finally `Done`, and raises `NutqError` for the server's errors about the context.

Reconnection: when the socket closes with a retryable code (1001, 1006, 1011, 1012, 1013) or the
server reports `draining` for a context, the client reconnects with exponential backoff and opens
every unfinished context again, resending the text that no `flushed` or word timestamp had
confirmed as spoken, then its pending flushes and close. Each context yields a `Resumed` event
first. Every piece of text is recorded under the same lock that sends it and that the replay holds,
so a piece is sent exactly once per connection and none is lost between connections.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from .errors import RETRYABLE_CLOSE_CODES, ConnectionLost, NutqError
from .events import (Audio, Done, Flushed, Resumed, Speech, Timestamps, bytes_per_sample,
                     parse_server_message, timings_from, unpack_audio_frame, words_from)

__all__ = ["Client", "Context", "speak", "SETTINGS", "ws_url"]

# The `config` fields a context or a connection may set (audio_mode is the client's own business:
# it always asks for binary frames).
SETTINGS = frozenset({"voice", "language", "output_format", "sample_rate", "timestamps", "temperature", "cfg_weight",
                      "exaggeration", "seed", "max_tokens", "normalize"})
_CONTEXT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_STOP = object()  # queued after an error that ends a context: the iterator stops there


def ws_url(url: str) -> str:
    """The native endpoint for a server address: http(s)/ws(s), path defaulting to /v1/tts/ws."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a server address: {url!r} (expected ws://host:port or http://host:port)")
    return urlunsplit((scheme, parts.netloc, parts.path if parts.path not in ("", "/") else "/v1/tts/ws",
                       parts.query, ""))


def _check_settings(settings: dict) -> None:
    unknown = set(settings) - SETTINGS
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(SETTINGS))}")


class Client:
    """A native-protocol connection. Use as `async with Client(url, **defaults) as client:`;
    `defaults` are settings (voice, output_format, ...) for every context of the connection."""

    def __init__(self, url: str = "ws://127.0.0.1:8000", *, api_key: str | None = None, reconnect: bool = True,
                 max_retries: int = 6, backoff_s: float = 0.25, max_backoff_s: float = 4.0,
                 open_timeout_s: float = 10.0, **defaults):
        _check_settings(defaults)
        self.url, self.api_key, self.defaults = ws_url(url), api_key, defaults
        self.reconnect, self.max_retries = reconnect, max_retries
        self.backoff_s, self.max_backoff_s, self.open_timeout_s = backoff_s, max_backoff_s, open_timeout_s
        self.reconnects = 0  # how many times a lost connection was reopened
        self._ws: ClientConnection | None = None
        self._lock = asyncio.Lock()  # connecting, sending and replaying: one at a time
        self._contexts: dict[str, Context] = {}
        self._ids = itertools.count(1)
        self._pending_error: NutqError | None = None  # a connection-level error no context took yet
        self._drops = 0  # retryable closes in a row with nothing received in between
        self._closed = False

    async def __aenter__(self) -> "Client":
        await self.connect()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def connect(self) -> None:
        async with self._lock:
            await self._connect_locked()

    def context(self, context_id: str | None = None, **settings) -> "Context":
        """A new context with these settings on top of the connection's defaults. Nothing is sent
        until its first `send_text`/`flush`/`close`."""
        _check_settings(settings)
        if context_id is None:
            context_id = f"c{next(self._ids)}"
        if not isinstance(context_id, str) or not _CONTEXT_ID.match(context_id):
            raise ValueError(f"context_id must be 1-64 characters of A-Z a-z 0-9 . _ : -, got {context_id!r}")
        if context_id in self._contexts:
            raise ValueError(f"context {context_id!r} is still open on this connection")
        ctx = Context(self, context_id, settings)
        self._contexts[context_id] = ctx
        return ctx

    async def aclose(self) -> None:
        """Close the connection; contexts still open end with a `client_closed` error."""
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        for ctx in list(self._contexts.values()):
            ctx._fail(NutqError("client_closed", "the client was closed while the context was open"))

    # ------------------------------------------------------------------ connection

    def _delay(self, attempt: int) -> float:
        base = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        return base * (0.5 + random.random() / 2)  # jitter: clients cut off together do not return together

    async def _connect_locked(self) -> None:
        if self._closed:
            raise NutqError("client_closed", "the client is closed")
        if self._ws is not None:
            return
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        for attempt in itertools.count(1):
            try:
                ws = await ws_connect(self.url, additional_headers=headers, open_timeout=self.open_timeout_s,
                                      max_size=16 * 2**20)
                break
            except InvalidURI as e:
                raise ValueError(str(e)) from None
            except (OSError, TimeoutError, WebSocketException) as e:
                status = e.response.status_code if isinstance(e, InvalidStatus) else None
                retryable = status is None or status in (429, 502, 503, 504)
                if not (self.reconnect and retryable) or attempt > self.max_retries:
                    raise NutqError("connect_failed", f"cannot connect to {self.url}: {e}", retryable=retryable,
                                    status=status) from e
                await asyncio.sleep(self._delay(attempt))
        self._ws = ws
        # the reader first: if the socket dies during the sends below, its close is handled there
        asyncio.get_running_loop().create_task(self._read(ws), name="nutq-client-reader")
        if self.defaults:
            try:
                await ws.send(json.dumps({"type": "config", **self.defaults}, ensure_ascii=False))
            except ConnectionClosed:
                pass

    async def _do(self, action: Callable[[ClientConnection], Awaitable[None]]) -> None:
        """Run `action` (record a change to a context, then send it) on a live connection."""
        async with self._lock:
            if self._pending_error is not None:
                err, self._pending_error = self._pending_error, None
                raise err
            await self._connect_locked()
            try:
                await action(self._ws)
            except ConnectionClosed:
                # the change is recorded: the reader either replays it on a new connection or ends
                # the context with the close's error, which its iterator raises
                pass

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                self._dispatch(frame)
        except ConnectionClosed:
            pass
        except NutqError as e:  # the server broke the protocol: nothing on this socket is trustworthy
            if self._ws is ws:
                self._ws = None
            await ws.close(1002)
            self._fail_all(e)
            return
        await self._on_closed(ws)

    async def _on_closed(self, ws: ClientConnection) -> None:
        code = ws.close_code if ws.close_code is not None else 1006
        async with self._lock:
            if self._ws is ws:
                self._ws = None
            # contexts that never sent anything have nothing on the server to lose
            open_ = [c for c in self._contexts.values() if not c._finished and c._on_ws is not None]
            if self._closed or not open_:
                return  # the next operation connects again
            if not (self.reconnect and code in RETRYABLE_CLOSE_CODES):
                err = self._pending_error or ConnectionLost(code, ws.close_reason or "")
                self._pending_error = None
                self._fail_all(err)
                return
            # a server that accepts and drops at once must not be hammered: back off between drops
            # too, and give up after max_retries drops with nothing received in between
            self._drops += 1
            if self._drops > self.max_retries:
                self._fail_all(ConnectionLost(code, f"{self._drops - 1} reconnections in a row dropped"))
                return
            await asyncio.sleep(self._delay(self._drops))
            try:
                await self._connect_locked()
            except NutqError as e:
                self._fail_all(e)
                return
            self.reconnects += 1
            for ctx in open_:
                await ctx._replay(self._ws, self.reconnects)

    def _fail_all(self, err: NutqError) -> None:
        for ctx in list(self._contexts.values()):
            ctx._fail(err)

    def _dispatch(self, frame: str | bytes) -> None:
        self._drops = 0  # the connection works
        if isinstance(frame, bytes):
            cid, data = unpack_audio_frame(frame)
            if (ctx := self._contexts.get(cid)) is not None:
                ctx._on_audio(data)
            return
        msg = parse_server_message(frame)
        ctx = self._contexts.get(msg.get("context_id") or "")
        kind = msg["type"]
        if kind == "error":
            err = NutqError.from_message(msg)
            if ctx is not None:
                ctx._on_error(err)
            elif (open_ := [c for c in self._contexts.values() if not c._finished]):
                for c in open_:  # e.g. bad connection defaults, a rate limit: concerns them all
                    c._push_error(err)
            else:
                self._pending_error = err
        elif ctx is None:
            return  # a late message for a context cancelled locally
        elif kind == "timestamps":
            ctx._on_words(msg["words"])
        elif kind == "flushed":
            ctx._on_flushed()
        elif kind == "done":
            ctx._on_done(msg)


class Context:
    """One utterance. Methods are coroutines; iterate it for its events (see the module doc)."""

    def __init__(self, client: Client, context_id: str, settings: dict):
        self.id, self._client, self._settings = context_id, client, settings
        eff = {**client.defaults, **settings}
        self.output_format: str = eff.get("output_format", "pcm_s16le")
        self.sample_rate: int = eff.get("sample_rate") or (8000 if self.output_format in ("mulaw", "alaw") else 24000)
        self._width = bytes_per_sample(self.output_format)
        self._text = ""  # all pieces so far
        self._acked = 0  # text before this offset is confirmed spoken (flushed / word timestamps)
        self._flushes: list[int] = []  # text offsets of flushes not yet confirmed
        self._closing = self._cancelled = self._draining = False
        self._finished = False  # done received, or failed: no more server events
        self._error: NutqError | None = None  # what failed the context, if anything did
        self._exhausted = False  # the iterator has returned Done or stopped
        self._on_ws: ClientConnection | None = None  # the connection the context is opened on
        self._base_chars = 0  # where the text of the current server-side context starts
        self._base_s = 0.0  # seconds of audio before the current server-side context (headless PCM)
        self._segment_bytes = 0
        self._events: asyncio.Queue = asyncio.Queue()

    # ------------------------------------------------------------------ sending

    async def send_text(self, piece: str) -> None:
        """Append a piece of text (any size, e.g. one LLM token); complete phrases start speaking."""
        if not isinstance(piece, str):
            raise TypeError(f"text must be str, got {type(piece).__name__}")
        if not piece:
            return
        self._check_writable()  # before connecting: a failed context does not open a connection

        async def act(ws):
            self._check_writable()
            self._text += piece
            await self._open(ws)
            await ws.send(json.dumps({"type": "text", "context_id": self.id, "text": piece}, ensure_ascii=False))
        await self._client._do(act)

    async def flush(self) -> None:
        """Speak everything sent so far, even an unfinished phrase; a `Flushed` event follows its audio."""
        self._check_writable()

        async def act(ws):
            self._check_writable()
            self._flushes.append(len(self._text))
            await self._open(ws)
            await ws.send(json.dumps({"type": "flush", "context_id": self.id}))
        await self._client._do(act)

    async def close(self) -> None:
        """Speak what remains, then end the context: `Done` (reason closed) after its last audio."""
        self._check_writable()

        async def act(ws):
            self._check_writable()
            self._closing = True
            await self._open(ws)
            await ws.send(json.dumps({"type": "close_context", "context_id": self.id}))
        await self._client._do(act)

    async def cancel(self) -> None:
        """Barge-in: stop now. Audio not yet iterated is dropped; the iterator ends with `Done`
        (reason cancelled)."""
        if self._finished:
            return
        self._cancelled = True
        self._drop_queued()

        async def act(ws):
            if self._on_ws is ws and not self._finished:
                await ws.send(json.dumps({"type": "cancel", "context_id": self.id}))
            elif not self._finished:  # never opened on this connection: nothing to stop there
                self._on_done({"reason": "cancelled", "timings": {"audio_s": 0.0, "phrases": 0}})
        await self._client._do(act)

    def _check_writable(self) -> None:
        if self._error is not None:
            raise self._error  # what ended the context (a lost connection, ...)
        if self._closing or self._cancelled or self._finished:
            raise NutqError("context_closed", f"context {self.id!r} is closed or cancelled", context_id=self.id)

    async def _open(self, ws: ClientConnection) -> None:
        if self._on_ws is not ws:
            await ws.send(json.dumps({"type": "config", "context_id": self.id, **self._settings}, ensure_ascii=False))
            self._on_ws = ws

    async def _replay(self, ws: ClientConnection, attempt: int) -> None:
        """Open the context again on a new connection and resend what was not confirmed spoken."""
        if self._cancelled:
            self._on_done({"reason": "cancelled", "timings": {"audio_s": 0.0, "phrases": 0}})
            return
        self._base_s = self._audio_s()
        self._base_chars, self._segment_bytes, self._draining = self._acked, 0, False
        self._events.put_nowait(Resumed(self.id, self._acked, attempt))
        try:
            await self._open(ws)
            pos = self._acked
            for mark in self._flushes:
                if mark > pos:
                    await self._send_raw(ws, {"type": "text", "context_id": self.id, "text": self._text[pos:mark]})
                    pos = mark
                await self._send_raw(ws, {"type": "flush", "context_id": self.id})
            if pos < len(self._text):
                await self._send_raw(ws, {"type": "text", "context_id": self.id, "text": self._text[pos:]})
            if self._closing:
                await self._send_raw(ws, {"type": "close_context", "context_id": self.id})
        except ConnectionClosed:
            pass  # this connection died too: its reader replays again

    @staticmethod
    async def _send_raw(ws: ClientConnection, msg: dict) -> None:
        await ws.send(json.dumps(msg, ensure_ascii=False))

    # ------------------------------------------------------------------ receiving

    def _audio_s(self) -> float:
        """Seconds of audio received (headless PCM/G.711 only; 0 for containers and codecs)."""
        if self._width is None:
            return 0.0
        return self._base_s + self._segment_bytes / self._width / self.sample_rate

    def _on_audio(self, data: bytes) -> None:
        if self._cancelled or self._finished:
            return
        self._segment_bytes += len(data)
        self._events.put_nowait(Audio(self.id, data, self.output_format, self.sample_rate))

    def _on_words(self, items: list[dict]) -> None:
        if self._cancelled or not items:
            return
        words = words_from(items, self._base_chars, self._base_s)
        heard = self._audio_s()
        # a word counts as spoken once its audio has arrived (always, when durations are unknown)
        spoken = [w.char_end for w in words if self._width is None or w.end <= heard + 1e-3]
        if spoken:
            self._acked = max(self._acked, max(spoken))
        self._events.put_nowait(Timestamps(self.id, words))

    def _on_flushed(self) -> None:
        if self._flushes:
            self._acked = max(self._acked, self._flushes.pop(0))
        if not self._cancelled:
            self._events.put_nowait(Flushed(self.id))

    def _on_error(self, err: NutqError) -> None:
        if err.code == "draining" and self._client.reconnect and not self._cancelled:
            self._draining = True  # the server goes away: replayed once the connection is reopened
            return
        self._push_error(err)

    def _push_error(self, err: NutqError) -> None:
        if not self._finished:
            self._events.put_nowait(err)

    def _on_done(self, msg: dict) -> None:
        if self._draining and msg.get("reason") == "error":
            return  # the context ended because of the drain: it goes on after reconnecting
        self._finish()
        self._events.put_nowait(Done(self.id, msg["reason"], timings_from(msg["timings"])))

    def _fail(self, err: NutqError) -> None:
        if self._finished:
            return
        self._finish()
        self._error = err
        self._events.put_nowait(err)
        self._events.put_nowait(_STOP)

    def _finish(self) -> None:
        self._finished = True
        if self._client._contexts.get(self.id) is self:
            del self._client._contexts[self.id]  # the id is free again, as on the server

    def _drop_queued(self) -> None:
        kept = []
        while not self._events.empty():
            item = self._events.get_nowait()
            if not isinstance(item, (Audio, Timestamps, Flushed)):
                kept.append(item)
        for item in kept:
            self._events.put_nowait(item)

    # ------------------------------------------------------------------ iterating

    def __aiter__(self) -> "Context":
        return self

    async def __anext__(self):
        if self._exhausted:
            raise StopAsyncIteration
        item = await self._events.get()
        if item is _STOP:
            self._exhausted = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, Done):
            self._exhausted = True
        return item

    async def collect(self) -> Speech:
        """All the context's audio, words and timings, once it is done (call `close()` first)."""
        speech = Speech(output_format=self.output_format, sample_rate=self.sample_rate)
        parts = []
        async for event in self:
            if isinstance(event, Audio):
                parts.append(event.data)
            elif isinstance(event, Timestamps):
                speech.words.extend(event.words)
            elif isinstance(event, Done):
                speech.timings = event.timings
        speech.audio = b"".join(parts)
        return speech


async def speak(text: str, url: str = "ws://127.0.0.1:8000", *, api_key: str | None = None, **settings) -> Speech:
    """Speak `text` on a new connection and return all of it (audio, words, timings)."""
    async with Client(url, api_key=api_key, **settings) as client:
        ctx = client.context()
        await ctx.send_text(text)
        await ctx.close()
        return await ctx.collect()

