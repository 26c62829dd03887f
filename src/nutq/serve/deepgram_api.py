"""Deepgram Aura-compatible speech: `POST /v1/speak` and `WS /v1/speak`, so that clients written for
Deepgram (the LiveKit and Pipecat plugins, Deepgram's SDKs) work by changing only their base URL.

Query parameters, on both:

    model        a voice id. Deepgram's own voice names (aura-asteria-en, aura-2-thalia-en, ...)
                 that are neither aliased (nutq serve --voice-alias) nor registered here speak with
                 the default voice: stock plugins always send one (see `serve.voice_names`).
    encoding     linear16 | mulaw | alaw, and over REST also mp3 | opus | flac | aac
    sample_rate  Hz; 24000 by default, 8000 for mulaw and alaw
    container    REST: none | wav | ogg, by default wav for linear16/mulaw/alaw (as Deepgram does:
                 clients that want headerless PCM send container=none); WS: none only
    bit_rate     REST, for mp3 / opus / aac
    nutq extensions: language, seed, max_tokens, temperature, cfg_weight, exaggeration
    Deepgram's other options (mip_opt_out, tag, ...) are accepted and ignored; callback is refused.

REST: JSON body {"text": "..."}; the audio streams while it is generated (REST's default encoding is
mp3, as Deepgram's), with headers dg-request-id, dg-model-name and dg-char-count. Errors are
Deepgram's JSON, {"err_code", "err_msg", "request_id"}, with the HTTP status (401 without a key).

WS (linear16 at 24 kHz by default): client messages are JSON {"type": "Speak", "text"}, {"type":
"Flush"}, {"type": "Clear"} and {"type": "Close"}; the server sends {"type": "Metadata"} on open,
the audio as binary messages, {"type": "Flushed", "sequence_id"}, {"type": "Cleared",
"sequence_id"} and {"type": "Warning", "description", "code"}. See docs/protocols/deepgram.md.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator
from starlette.websockets import WebSocketDisconnect

from .. import __version__
from ..text.segment import PhraseSegmenter
from .audio_out import Encoder, make_encoder
from .context import LiveStream, ServerContext
from .errors import ApiError, api_error_from, ws_close_code
from .extensions import SynthesisExtensions, synthesis_request, validate
from .formats import OutputFormat, UnsupportedFormat, parse_format
from .response import LiveAudioResponse
from .speech_queue import SpeechQueue
from .voice_names import resolve_voice
from .ws_util import WsReceiver, authenticate_ws, close_ws

__all__ = ["SpeakQuery", "deepgram_router", "error_response"]

PROTOCOL = "deepgram"
_HEADERLESS = ("linear16", "mulaw", "alaw")  # sample streams; the only encodings of Deepgram's WebSocket
_REST_DEFAULT_ENCODING = "mp3"  # what Deepgram's REST API answers when no encoding is given


class SpeakQuery(SynthesisExtensions):
    """The query string of both endpoints (values arrive as strings; pydantic converts them)."""

    model: str | None = None
    encoding: str | None = None
    sample_rate: int | None = None
    container: str | None = None
    bit_rate: int | None = None
    language: str | None = Field(None, min_length=1)
    callback: str | None = None

    @field_validator("callback")
    @classmethod
    def _no_callback(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("callbacks are not supported: read the audio from this response")
        return v

    def rest_format(self) -> OutputFormat:
        encoding = (self.encoding or _REST_DEFAULT_ENCODING).lower()
        container = self.container
        if container is None and encoding in _HEADERLESS:
            container = "wav"
        return parse_format(encoding, self.sample_rate, protocol="deepgram", container=container,
                            bit_rate=self.bit_rate)

    def ws_format(self) -> OutputFormat:
        encoding = (self.encoding or "linear16").lower()
        if encoding not in _HEADERLESS:
            raise UnsupportedFormat(f"over the WebSocket, encoding must be one of {', '.join(_HEADERLESS)}; "
                                    f"got {self.encoding!r}")
        if self.container not in (None, "none"):
            raise UnsupportedFormat(f"over the WebSocket, container must be none; got {self.container!r}")
        return parse_format(encoding, self.sample_rate, protocol="deepgram", container="none", bit_rate=self.bit_rate)


def _request_id(conn) -> str:
    """The request id the access log uses (logs.RequestLogMiddleware), else a fresh UUID."""
    return getattr(conn.state, "request_id", None) or str(uuid.uuid4())


def _error_body(err: ApiError, request_id: str) -> dict:
    code = "INVALID_AUTH" if err.status == 401 else (err.code or "error").upper()  # Deepgram's spelling for 401
    return {"err_code": code, "err_msg": err.message, "request_id": request_id}


def error_response(err: ApiError, conn) -> JSONResponse:
    """`err` as Deepgram answers it over REST (also for refusals made before the route runs)."""
    return JSONResponse(_error_body(err, _request_id(conn)), status_code=err.status, headers=err.headers)


def _warning(err: ApiError) -> dict:
    code = (err.code or "error").upper()
    # warn_code/warn_msg: the older spelling, still what LiveKit's plugin logs
    return {"type": "Warning", "description": err.message, "code": code, "warn_code": code, "warn_msg": err.message}


def _text_of(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, 'the body must be JSON: {"text": "..."}', code="invalid_json") from None
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, 'the body must be {"text": "<text to speak>"} with non-empty text',
                       code="invalid_value", param="text")
    return text


async def _audio(live: LiveStream, enc: Encoder) -> AsyncIterator[bytes]:
    try:
        async for chunk in live:
            yield await enc.aencode(chunk.audio)
        yield enc.finish()
    finally:
        await live.aclose()  # on every way out, client gone included: frees the admission


@dataclass(frozen=True)
class _Text:
    text: str  # complete phrases (or a flushed remainder), spoken as one stream


@dataclass(frozen=True)
class _Flush:
    sequence_id: int  # answered with Flushed once everything queued before it has been sent


class _SpeakSocket:
    """One WebSocket connection: text in, audio out, in order.

    Speak text goes through a `PhraseSegmenter`: each phrase is queued as soon as it is complete
    (a sentence end, or a comma after a long enough start), so speech starts before the Flush that
    clients send only at the end of a reply; Flush queues the rest and then its Flushed. Phrases
    queued while an earlier one is being spoken are merged and spoken as one stream.
    """

    def __init__(self, ws: WebSocket, ctx: ServerContext, client: str, query: SpeakQuery, fmt: OutputFormat,
                 voice: str):
        self.ws, self.ctx, self.client, self.query, self.fmt, self.voice = ws, ctx, client, query, fmt, voice
        self.segmenter = PhraseSegmenter()
        self.queue: SpeechQueue[_Text | _Flush] = SpeechQueue(self._speak)
        self.sequence = 0
        self.closed = False
        self.receiver = WsReceiver(ws, ctx, self.warn, busy=lambda: self.queue.busy)

    async def send_json(self, payload: dict) -> None:
        await self.receiver.send(json.dumps(payload, ensure_ascii=False))

    async def warn(self, err: ApiError) -> None:
        self.ctx.metrics.error(err)
        await self.send_json(_warning(err))

    async def run(self) -> None:
        try:
            while (data := await self.receiver.next()) is not None:
                if not await self._on_message(data):
                    break
        finally:
            await self.queue.clear()  # client gone or closed: generation stops within one decode step

    async def _on_message(self, data: str | bytes) -> bool:
        """Handle one client message; False once the connection is closed."""
        if isinstance(data, bytes):
            await self.warn(ApiError(400, "binary messages are not part of this protocol; send JSON text",
                                     code="unsupported_message"))
            return True
        try:
            msg = json.loads(data)
        except ValueError:
            await self.warn(ApiError(400, "message is not valid JSON", code="invalid_json"))
            return True
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "Speak":
            await self._on_speak(msg.get("text"))
        elif kind == "Flush":
            self._queue_text(self.segmenter.flush())
            self.queue.put(_Flush(self._next_sequence()))
        elif kind == "Clear":
            sequence_id = self._next_sequence()
            self.segmenter.reset()
            await self.queue.clear()  # returns once the cancelled stream has sent its last byte
            await self.send_json({"type": "Cleared", "sequence_id": sequence_id})
        elif kind == "Close":
            self._queue_text(self.segmenter.flush())
            await self.queue.join()
            await close_ws(self.ws, 1000)
            return False
        else:
            await self.warn(ApiError(400, f"unknown message type {kind!r}; expected Speak, Flush, Clear or Close",
                                     code="unknown_message_type"))
        return True

    def _next_sequence(self) -> int:
        n, self.sequence = self.sequence, self.sequence + 1
        return n

    async def _on_speak(self, text: object) -> None:
        if not isinstance(text, str):
            await self.warn(ApiError(400, 'Speak needs a string "text"', code="invalid_value", param="text"))
            return
        limit = self.ctx.config.max_input_chars
        unspoken = len(self.segmenter.pending) + sum(len(j.text) for j in self.queue.pending if isinstance(j, _Text))
        if unspoken + len(text) > limit:
            await self.warn(ApiError(400, f"this Speak was dropped: more than {limit} characters would wait "
                                          "unspoken; send Flush", code="input_too_long", param="text"))
            return
        self._queue_text(self.segmenter.feed(text))

    def _queue_text(self, phrases: list[str]) -> None:
        text = "".join(phrases)
        if not text:
            return
        pending = self.queue.pending
        if pending and isinstance(pending[-1], _Text):  # not started yet: one stream for both
            pending[-1] = _Text(pending[-1].text + text)
        else:
            self.queue.put(_Text(text))

    async def _speak(self, job: _Text | _Flush) -> None:
        if self.closed:
            return
        if isinstance(job, _Flush):
            await self.send_json({"type": "Flushed", "sequence_id": job.sequence_id})
            return
        opts = synthesis_request(self.query, job.text, self.voice, self.query.language, self.ctx.config.max_new_tokens,
                                 self.fmt)
        try:
            live = await self.ctx.open_stream(opts, client=self.client, protocol=PROTOCOL)
        except ApiError as e:
            await self._failed(e)
            return
        try:
            await self._say(live)
        finally:
            live.told()  # its last bytes (or the Warning and close) are out, or never will be

    async def _say(self, live: LiveStream) -> None:
        enc = make_encoder(live.request.output)
        try:
            async for chunk in live:
                data = await enc.aencode(chunk.audio)
                if data:
                    await self.receiver.send(data)
            tail = enc.finish()
            if tail:
                await self.receiver.send(tail)
        except ApiError as e:
            await self._failed(e)
        finally:
            await live.aclose()

    async def _failed(self, err: ApiError) -> None:
        """A stream could not start or broke off. Bad text costs only its audio (a Warning; the
        Flushed still follows); a busy, draining or failing server closes the connection (1013 /
        1011), since reconnecting and retrying is what Deepgram clients do on a dropped socket."""
        await self.warn(err)
        if err.retryable:
            self.closed = True
            await close_ws(self.ws, ws_close_code(err), err.message)


def deepgram_router(ctx: ServerContext) -> APIRouter:
    """Authentication happens inside the endpoints: its 401 must have Deepgram's error shape."""
    router = APIRouter()

    @router.post("/v1/speak")
    async def speak(request: Request):
        request_id = _request_id(request)
        try:
            client = request.app.state.auth.identify(request)
            query = validate(SpeakQuery, dict(request.query_params))
            text = _text_of(await request.body())
            fmt = query.rest_format()
            voice = await resolve_voice(ctx, query.model, PROTOCOL)
            opts = synthesis_request(query, text, voice, query.language, ctx.config.max_new_tokens, fmt)
            enc = make_encoder(opts.output)
            live = await ctx.open_stream(opts, client=client, protocol=PROTOCOL)
        except Exception as e:  # noqa: BLE001 - every failure answered in Deepgram's shape
            err = api_error_from(e, ctx.config.retry_after_s)
            ctx.metrics.error(err)
            return error_response(err, request)
        headers = {"dg-request-id": request_id, "dg-model-name": query.model or voice, "dg-char-count": str(len(text))}
        return LiveAudioResponse(_audio(live, enc), media_type=opts.output.content_type, stream=live,
                                 headers=headers)

    @router.websocket("/v1/speak")
    async def speak_ws(ws: WebSocket):
        await ws.accept()

        async def warn(err: ApiError) -> None:
            await ws.send_text(json.dumps(_warning(err), ensure_ascii=False))

        client = await authenticate_ws(ws, warn)
        if client is None:
            return
        request_id = _request_id(ws)
        try:
            query = validate(SpeakQuery, dict(ws.query_params))
            fmt = query.ws_format()
            voice = await resolve_voice(ctx, query.model, PROTOCOL)
        except Exception as e:  # noqa: BLE001 - where Deepgram refuses the handshake: a Warning, then close
            err = api_error_from(e, ctx.config.retry_after_s)
            ctx.metrics.error(err)
            await warn(err)
            await close_ws(ws, ws_close_code(err), err.message)
            return
        model_id = await asyncio.to_thread(lambda: ctx.engine.model_id)  # hashes checkpoint files the first time
        await ws.send_text(json.dumps({
            "type": "Metadata", "request_id": request_id, "model_name": query.model or voice,
            "model_version": __version__, "model_uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"nutq:{model_id}")),
            "voice": voice,
        }))
        try:
            await _SpeakSocket(ws, ctx, client, query, fmt, voice).run()
        except (WebSocketDisconnect, RuntimeError):  # a send raced with the client leaving
            pass

    return router
