"""The seed's simple protocol, kept as it was for existing clients.

    WS  /ws/tts      client: {"text", "language_id", "speaker_id"} (one request per message; several
                     may follow on one socket and are spoken in order); server: the audio as binary
                     messages (pcm s16le, 24 kHz, mono), then {"status": "complete", "latency_ms"}.
                     An error answers {"status": "error", "error": {"message", "type", "param",
                     "code", "retryable"}} and the socket stays usable.
    GET /tts/stream  ?text=&language_id=&speaker_id= : the same audio as a chunked body, with headers
                     X-Sample-Rate: 24000, X-Channels: 1, X-Format: s16le.
    GET /latency     first-audio latency of the server's latest streams, every protocol's: count,
                     mean, p50, p95, max, last (ms).

`language_id` defaults to the server's language, `speaker_id` to "default" (a registered voice id
otherwise). nutq's extension fields (seed, max_tokens, temperature, cfg_weight, exaggeration) are
accepted in the JSON and the query string; other unknown fields are ignored, as the seed did.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import numpy as np
from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.websockets import WebSocketDisconnect

from .audio_out import make_encoder
from .context import RECENT_LATENCIES, LiveStream, ServerContext, StreamOptions
from .errors import ApiError, api_error_from
from .extensions import SynthesisExtensions, synthesis_request, validate
from .formats import parse_format
from .response import LiveAudioResponse
from .speech_queue import SpeechQueue
from .ws_util import WsReceiver, authenticate_ws

__all__ = ["SeedRequest", "seed_router"]

PROTOCOL = "seed"
_FORMAT = parse_format("pcm_s16le")  # headerless s16le at the engine's 24 kHz
_AUDIO_HEADERS = {"X-Sample-Rate": str(_FORMAT.sample_rate), "X-Channels": "1", "X-Format": "s16le"}
_MAX_WAITING = 8  # requests one socket may queue behind the one being spoken


class SeedRequest(SynthesisExtensions):
    text: str = Field(min_length=1)
    language_id: str | None = Field(None, min_length=1, description="language code; default: the server's")
    speaker_id: str = Field("default", min_length=1, description="a registered voice id or 'default'")

    def options(self, max_new_tokens: int) -> StreamOptions:
        return synthesis_request(self, self.text, self.speaker_id, self.language_id, max_new_tokens, _FORMAT)


def _error_body(err: ApiError) -> dict:
    return {"status": "error", "error": {**err.body()["error"], "retryable": err.retryable}}


def _error_response(ctx: ServerContext, e: Exception) -> JSONResponse:
    err = api_error_from(e, ctx.config.retry_after_s)
    ctx.metrics.error(err)
    return JSONResponse(_error_body(err), status_code=err.status, headers=err.headers)


def _parse(data: str | bytes) -> SeedRequest:
    if isinstance(data, bytes):
        raise ApiError(400, 'send requests as JSON text: {"text", "language_id", "speaker_id"}',
                       code="unsupported_message")
    try:
        msg = json.loads(data)
    except ValueError:
        raise ApiError(400, "message is not valid JSON", code="invalid_json") from None
    if not isinstance(msg, dict):
        raise ApiError(400, 'a request is a JSON object: {"text", "language_id", "speaker_id"}', code="invalid_value")
    return validate(SeedRequest, msg, strict=True)


async def _pcm(live: LiveStream) -> AsyncIterator[bytes]:
    enc = make_encoder(live.request.output)
    try:
        async for chunk in live:
            yield enc.encode(chunk.audio)  # PCM: cheaper than a thread hop
    finally:
        await live.aclose()  # on every way out, client gone included: frees the admission


def _latency_stats(latencies_s) -> dict:
    ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
    stats = {"count": int(ms.size), "window": RECENT_LATENCIES}
    if ms.size == 0:
        return {**stats, "mean_ms": None, "p50_ms": None, "p95_ms": None, "max_ms": None, "last_ms": None}
    p50, p95 = np.percentile(ms, [50, 95])
    return {**stats, "mean_ms": round(float(ms.mean()), 1), "p50_ms": round(float(p50), 1),
            "p95_ms": round(float(p95), 1), "max_ms": round(float(ms.max()), 1), "last_ms": round(float(ms[-1]), 1)}


def seed_router(ctx: ServerContext) -> APIRouter:
    """Authentication happens inside the endpoints, so that a 401 has this protocol's error shape."""
    router = APIRouter()

    @router.get("/tts/stream")
    async def tts_stream(request: Request):
        try:
            client = request.app.state.auth.identify(request)
            req = validate(SeedRequest, dict(request.query_params))
            live = await ctx.open_stream(req.options(ctx.config.max_new_tokens), client=client, protocol=PROTOCOL)
        except Exception as e:  # noqa: BLE001 - every failure answered in this protocol's shape
            return _error_response(ctx, e)
        return LiveAudioResponse(_pcm(live), media_type=live.request.output.content_type, stream=live,
                                 headers=_AUDIO_HEADERS)

    @router.get("/latency")
    async def latency(request: Request):
        try:
            request.app.state.auth.identify(request)
        except ApiError as e:
            return _error_response(ctx, e)
        return _latency_stats(list(ctx.recent_latencies))

    @router.websocket("/ws/tts")
    async def tts_ws(ws: WebSocket):
        await ws.accept()

        async def send_error(err: ApiError) -> None:
            ctx.metrics.error(err)
            await receiver.send(json.dumps(_error_body(err), ensure_ascii=False))

        queue: SpeechQueue[SeedRequest] = SpeechQueue(lambda req: speak(req))
        receiver = WsReceiver(ws, ctx, send_error, busy=lambda: queue.busy)
        client = await authenticate_ws(ws, send_error)
        if client is None:
            return

        async def speak(req: SeedRequest) -> None:
            try:
                live = await ctx.open_stream(req.options(ctx.config.max_new_tokens), client=client, protocol=PROTOCOL)
            except ApiError as e:
                await send_error(e)
                return
            try:
                await say(live)
            finally:
                live.told()  # its last message (complete, or the error) is out, or never will be

        async def say(live: LiveStream) -> None:
            enc = make_encoder(live.request.output)
            try:
                async for chunk in live:
                    piece = enc.encode(chunk.audio)
                    if piece:
                        await receiver.send(piece)
            except ApiError as e:  # generation failed part-way
                await send_error(e)
                return
            finally:
                await live.aclose()  # also when cancelled (client gone): frees the session at once
            latency = live.first_audio_latency
            await receiver.send(json.dumps({"status": "complete",
                                           "latency_ms": None if latency is None else round(latency * 1000.0, 1)}))

        try:
            while (data := await receiver.next()) is not None:
                try:
                    req = _parse(data)
                    if len(queue.pending) >= _MAX_WAITING:
                        raise ApiError(429, f"{_MAX_WAITING} requests already wait on this socket; send the next "
                                            "after a complete", code="too_many_requests")
                except ApiError as e:
                    await send_error(e)
                    continue
                queue.put(req)
        except (WebSocketDisconnect, RuntimeError):  # a send raced with the client leaving
            pass
        finally:
            await queue.clear()  # client gone: generation stops within one decode step

    return router
