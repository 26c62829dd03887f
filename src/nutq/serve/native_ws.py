"""The native multi-context WebSocket, `/v1/tts/ws` (messages: `native_protocol`; spec:
docs/protocols/native.md).

One connection carries many contexts (utterances). Each context has its own phrase segmenter,
encoder and speaker task:

* `text` pieces go through the context's `PhraseSegmenter`; each phrase it completes is queued at
  once, so speech starts before `flush`. `flush` queues the rest and then a `flushed` marker;
  `close_context` does the same and ends the context after its audio.
* The speaker speaks its queue in order, one engine stream (`ServerContext.open_stream`) per
  phrase, phrase i with seed + i. Contexts speak concurrently, each in its own task, so their
  chunks interleave as the engine makes them; a frame only ever holds one context's audio.
* `cancel` (barge-in) cancels the speaker task: the engine stops before its next decode step, the
  queued text is dropped, and `done` (cancelled) is the last thing sent for the context. Every
  send checks the context's `cancelled` flag under the connection's send lock, so a chunk that
  was on its way when the cancel arrived is dropped rather than sent after the `done`.

Client errors (bad JSON, unknown type, wrong field types, unknown voice, unsupported language or
format, too much text) are answered with an `error` message and the connection goes on; an error
in synthesis ends only its context (`error`, then `done` with reason "error").
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect
from pydantic import TypeAdapter, ValidationError

from ..engine.phrases import NothingToSay
from ..engine.stream import Phrase
from ..errors import NutqError
from ..text.segment import PhraseSegmenter
from .audio_out import Encoder, make_encoder
from .context import LiveStream, ServerContext
from .errors import ApiError, api_error_from
from .extensions import synthesis_request
from .formats import ENGINE_SAMPLE_RATE, OutputFormat, parse_format
from .native_protocol import (CLIENT_MESSAGES, AudioMessage, ClientMessage, ConfigMessage, DoneMessage, ErrorMessage,
                              FlushedMessage, SpeakSettings, Timings, TimestampsMessage, WordTiming, pack_audio_frame)
from .timestamps import WordTimer, phrase_words
from .ws_util import SlowConsumer, WsReceiver, authenticate_ws

__all__ = ["native_router", "MAX_CONTEXTS"]

log = logging.getLogger(__name__)

MAX_CONTEXTS = 32  # open contexts per connection; each may hold max_input_chars of unspoken text
_PARSER = TypeAdapter(ClientMessage)


@dataclass(frozen=True)
class _Phrase:
    text: str
    start: int  # offset in the context's text
    t_ready: float  # perf_counter when the message that completed it arrived


_FLUSH, _CLOSE = object(), object()


class _Context:
    def __init__(self, cid: str, settings: SpeakSettings, fmt: OutputFormat):
        self.id, self.settings, self.format = cid, settings, fmt
        # one encoder for the context's whole audio (its phrases are one continuous stream), made
        # from the format every phrase's request carries
        self.encoder: Encoder = make_encoder(fmt)
        self.segmenter = PhraseSegmenter()
        self.received = 0  # characters of text received so far
        self.cut = 0  # ... of which the segmenter has let go (as phrases or dropped trailing space)
        self.queued_chars = 0  # in phrases queued or being spoken
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.closing = False
        self.cancelled = False
        self.speaking = False
        self.live: LiveStream | None = None  # the latest phrase's stream (told by _speak if it failed)
        # stats for `done`
        self.phrases = 0
        self.samples = 0  # at the engine's rate: the context's audio clock
        self.seq = 0
        self.synth_s = 0.0
        self.t_first_ready: float | None = None
        self.first_audio_latency: float | None = None

    @property
    def audio_s(self) -> float:
        return self.samples / ENGINE_SAMPLE_RATE

    @property
    def unspoken(self) -> int:
        return len(self.segmenter.pending) + self.queued_chars

    def timings(self) -> Timings:
        rtf = self.synth_s / self.audio_s if self.samples else None
        return Timings(first_audio_latency_s=self.first_audio_latency, rtf=rtf, audio_s=self.audio_s,
                       phrases=self.phrases)


class _ClientGone(NutqError):
    """The socket is closed: nothing can be sent any more."""


class _Connection:
    def __init__(self, ws: WebSocket, ctx: ServerContext, client: str):
        self.ws, self.ctx, self.client = ws, ctx, client
        self.defaults = SpeakSettings()
        self.contexts: dict[str, _Context] = {}
        self._send_lock = asyncio.Lock()
        self._gone = False
        self._tasks: set[asyncio.Task] = set()  # speakers
        self._releasing: set[asyncio.Task] = set()  # LiveStream.aclose() calls under way
        self.receiver = WsReceiver(ws, ctx, self.send_error, self.busy)

    # ------------------------------------------------------------------ receive side

    async def run(self) -> None:
        try:
            while (data := await self.receiver.next()) is not None:
                await self.handle(data)
        finally:
            self._gone = True
            await self.shutdown()

    def busy(self) -> bool:
        return any(c.speaking or not c.queue.empty() for c in self.contexts.values())

    async def handle(self, data: str | bytes) -> None:
        cid = None
        try:
            if isinstance(data, bytes):
                raise ApiError(400, "binary frames are not accepted; send JSON text messages", code="invalid_message")
            msg = self._parse(data)
            cid = getattr(msg, "context_id", None)
            if msg.type == "config":
                await self.on_config(msg)
            elif msg.type == "text":
                self.on_text(msg.context_id, msg.text)
            elif msg.type in ("flush", "close_context"):
                self.on_flush(msg.context_id, close=msg.type == "close_context")
            else:
                await self.on_cancel(msg.context_id)
        except Exception as e:  # noqa: BLE001 - every failure is answered in-band; the connection goes on
            err = api_error_from(e, self.ctx.config.retry_after_s)
            self.ctx.metrics.error(err)
            await self.send_error(err, cid)

    @staticmethod
    def _parse(data: str):
        try:
            return _PARSER.validate_json(data)
        except ValidationError as e:
            first = e.errors()[0]
            kind = first["type"]
            if kind == "json_invalid":
                raise ApiError(400, f"malformed JSON: {first['msg']}", code="invalid_json") from None
            if kind in ("union_tag_invalid", "union_tag_not_found", "dict_type", "model_attributes_type"):
                raise ApiError(400, f"expected a JSON object with \"type\" one of {', '.join(CLIENT_MESSAGES)}",
                               code="unknown_type", param="type") from None
            where = ".".join(str(x) for x in first["loc"][1:])  # loc[0] is the message type
            raise ApiError(400, f"{where}: {first['msg']}" if where else first["msg"], code="invalid_value",
                           param=where or None) from None

    async def on_config(self, msg: ConfigMessage) -> None:
        if msg.context_id is None:
            settings = self.defaults.model_copy(update=msg.changes())
            await self._validate(settings)
            self.defaults = settings
            return
        if msg.context_id in self.contexts:
            raise ApiError(400, f"context {msg.context_id!r} already exists; configure a context before its "
                                "first text", code="context_active", param="context_id")
        settings = self.defaults.model_copy(update=msg.changes())
        fmt = await self._validate(settings)
        self._open(msg.context_id, settings, fmt)

    async def _validate(self, s: SpeakSettings) -> OutputFormat:
        """Everything about settings that can be checked before speaking: format (and its codec
        package), language, voice, token cap. Raises `ApiError`."""
        try:
            fmt = parse_format(s.output_format, s.sample_rate, protocol="native")
            make_encoder(fmt)
        except ValueError as e:
            raise ApiError(400, str(e), code="unsupported_format", param="output_format") from e
        language = s.language or self.ctx.config.default_language
        try:
            self.ctx.engine.tokenizer.language_id(language)
        except ValueError as e:
            raise ApiError(400, str(e), code="unsupported_language", param="language") from e
        if s.max_tokens is not None and s.max_tokens > self.ctx.config.max_new_tokens:
            raise ApiError(400, f"max_tokens must be <= {self.ctx.config.max_new_tokens}", code="invalid_value",
                           param="max_tokens")
        await asyncio.to_thread(self.ctx.engine.voices.get, s.voice)  # UnknownVoiceError -> 404 voice_not_found
        return fmt

    def _open(self, cid: str, settings: SpeakSettings, fmt: OutputFormat) -> _Context:
        if len(self.contexts) >= MAX_CONTEXTS:
            raise ApiError(429, f"at most {MAX_CONTEXTS} open contexts per connection; close or cancel one",
                           code="too_many_contexts", param="context_id")
        c = _Context(cid, settings, fmt)
        self.contexts[cid] = c
        c.task = asyncio.create_task(self._speak(c), name=f"nutq-native-{cid}")
        self._tasks.add(c.task)  # the loop keeps only weak references to tasks
        c.task.add_done_callback(self._tasks.discard)
        return c

    def _context(self, cid: str) -> _Context:
        c = self.contexts.get(cid)
        if c is None:
            raise ApiError(400, f"no open context {cid!r}", code="unknown_context", param="context_id")
        if c.closing:
            raise ApiError(400, f"context {cid!r} is closing; start a new one", code="context_closed",
                           param="context_id")
        return c

    def on_text(self, cid: str, text: str) -> None:
        c = self._context(cid) if cid in self.contexts else None
        held = (c.unspoken if c is not None else 0) + len(text)
        limit = self.ctx.config.max_input_chars
        if held > limit:
            raise ApiError(400, f"context {cid!r} would hold {held} characters not yet spoken; the limit is {limit}",
                           code="input_too_long", param="text")
        if c is None:
            # the defaults were validated when they were set; only the encoder is per context
            fmt = parse_format(self.defaults.output_format, self.defaults.sample_rate, protocol="native")
            c = self._open(cid, self.defaults, fmt)
        c.received += len(text)
        self._queue_phrases(c, c.segmenter.feed(text))

    def on_flush(self, cid: str, close: bool) -> None:
        c = self._context(cid)
        self._queue_phrases(c, c.segmenter.flush())
        c.cut = c.received  # trailing whitespace the segmenter dropped counts as said
        c.queue.put_nowait(_CLOSE if close else _FLUSH)
        c.closing = close

    def _queue_phrases(self, c: _Context, phrases: list[str]) -> None:
        now = time.perf_counter()
        for text in phrases:
            c.queue.put_nowait(_Phrase(text, c.cut, now))
            c.cut += len(text)
            c.queued_chars += len(text)

    async def on_cancel(self, cid: str) -> None:
        c = self.contexts.get(cid)
        if c is None:
            raise ApiError(400, f"no open context {cid!r}", code="unknown_context", param="context_id")
        self._drop(c)
        await self._send_text(DoneMessage(context_id=cid, reason="cancelled", timings=c.timings()).model_dump_json())

    def _drop(self, c: _Context) -> None:
        """Stop a context now: no more sends for it, its engine stream cancelled by its task's end."""
        c.cancelled = True
        if self.contexts.get(c.id) is c:
            del self.contexts[c.id]
        if c.task is not None:
            c.task.cancel()

    async def shutdown(self) -> None:
        """The connection is over: stop every context and wait until their KV slots are free."""
        for c in list(self.contexts.values()):
            self._drop(c)
        # speakers of contexts that ended by themselves may still be sending their `done`
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*self._releasing, return_exceptions=True)

    # ------------------------------------------------------------------ speaking

    async def _speak(self, c: _Context) -> None:
        """The context's speaker: its queue, in order, until `close_context`, an error or cancel."""
        try:
            await self._speak_queue(c)
        except _ClientGone:
            pass
        except Exception as e:  # noqa: BLE001 - ends this context only, reported to the client
            err = api_error_from(e, self.ctx.config.retry_after_s)  # logs what is our fault
            self.ctx.metrics.error(err)
            reason = "server_draining" if err.code == "server_draining" else "error"
            try:
                await self._send_for(c, self._error(err, c.id))
                await self._end(c, DoneMessage(context_id=c.id, reason=reason, timings=c.timings()))
            except _ClientGone:
                pass
        finally:
            c.speaking = False
            if c.live is not None:
                c.live.told()  # the context's last message (done, error) is out, or never will be

    async def _speak_queue(self, c: _Context) -> None:
        while True:
            item = await c.queue.get()
            c.speaking = True
            if item is _FLUSH:
                await self._send_for(c, FlushedMessage(context_id=c.id).model_dump_json())
            elif item is _CLOSE:
                tail = c.encoder.finish()
                if tail:
                    await self._send_audio(c, tail)
                await self._end(c, DoneMessage(context_id=c.id, reason="closed", timings=c.timings()))
                return
            else:
                try:
                    await self._say(c, item)
                finally:
                    c.queued_chars -= len(item.text)
            c.speaking = False

    async def _end(self, c: _Context, done: DoneMessage) -> None:
        if self.contexts.get(c.id) is c:
            del self.contexts[c.id]
        await self._send_for(c, done.model_dump_json())

    async def _say(self, c: _Context, phrase: _Phrase) -> None:
        s = c.settings
        language = s.language or self.ctx.config.default_language
        # The engine's plan, made once: its phrases carry the character maps the word timestamps read.
        try:
            planned = await asyncio.to_thread(self.ctx.engine.phrases, phrase.text, language, s.normalize, False,
                                              s.diacritize)
        except NothingToSay:
            return  # punctuation or space only: nothing to say
        opts = synthesis_request(s, phrase.text, s.voice, language, self.ctx.config.max_new_tokens, c.format,
                                 seed_offset=c.phrases, segment=False)
        if c.t_first_ready is None:
            c.t_first_ready = phrase.t_ready
        c.phrases += 1
        t0 = time.perf_counter()
        live = await self.ctx.open_stream(opts, client=self.client, protocol="native", phrases=planned)
        c.live = live
        try:
            timer, timed_phrase = None, -1  # the engine phrase being timed (a long one is cut into several)
            async for chunk in live:
                if c.first_audio_latency is None:
                    c.first_audio_latency = time.perf_counter() - c.t_first_ready
                if s.timestamps and chunk.phrase_index != timed_phrase:
                    if timer is not None:  # the previous engine phrase ended where this chunk starts
                        await self._send_words(c, phrase, timer.finish(c.audio_s))
                    timed_phrase = chunk.phrase_index
                    timer = self._timer(c, planned[timed_phrase], language)
                data = await c.encoder.aencode(chunk.audio)
                c.samples += len(chunk.audio)
                if data:
                    await self._send_audio(c, data)
                if timer is not None:
                    timed = timer.finish(c.audio_s) if chunk.is_final else timer.chunk(c.audio_s, chunk.text_position)
                    await self._send_words(c, phrase, timed)
        finally:
            c.synth_s += time.perf_counter() - t0
            await self._release(live)
        live.told()  # all its audio is out; when it fails instead, _speak tells it after error + done

    def _timer(self, c: _Context, planned: Phrase, language: str) -> WordTimer | None:
        ids = planned.ids.tolist()
        words = phrase_words(planned.text, planned.spoken, ids, self.ctx.engine.tokenizer, language)
        if words is None:
            log.warning("native ws: cannot map tokens back to the text of a phrase; no timestamps for it")
            return None
        return WordTimer(words, len(ids), c.audio_s)

    async def _release(self, live: LiveStream) -> None:
        """`live.aclose()` even when this task is being cancelled, and tracked so that `shutdown`
        waits for it: the KV slot is free when the connection handler returns."""
        task = asyncio.ensure_future(live.aclose())
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
        await asyncio.shield(task)

    # ------------------------------------------------------------------ sending

    async def _send_audio(self, c: _Context, data: bytes) -> None:
        if c.settings.audio_mode == "binary":
            payload: str | bytes = pack_audio_frame(c.id, data)
        else:
            payload = AudioMessage(context_id=c.id, seq=c.seq, audio=base64.b64encode(data).decode()).model_dump_json()
        c.seq += 1
        await self._send_for(c, payload)

    async def _send_words(self, c: _Context, phrase: _Phrase, timed) -> None:
        if not timed:
            return
        words = [WordTiming(word=t.word.text, start=round(t.start_s, 3), end=round(t.end_s, 3),
                            char_start=phrase.start + t.word.start, char_end=phrase.start + t.word.end)
                 for t in timed]
        await self._send_for(c, TimestampsMessage(context_id=c.id, words=words).model_dump_json())

    @staticmethod
    def _error(err: ApiError, cid: str | None) -> str:
        return ErrorMessage(code=err.code or "error", message=err.message, retryable=err.retryable,
                            context_id=cid, param=err.param).model_dump_json()

    async def send_error(self, err: ApiError, cid: str | None = None) -> None:
        await self._send_text(self._error(err, cid))

    async def _send_for(self, c: _Context, payload: str | bytes) -> None:
        """Send for a context, unless it was cancelled meanwhile. Shielded: a cancel arriving mid-send
        must not cut a frame in half (the cancelled task still stops right after)."""
        await asyncio.shield(self._send(payload, c))
        if self._gone:
            raise _ClientGone

    async def _send_text(self, payload: str) -> None:
        await self._send(payload, None)

    async def _send(self, payload: str | bytes, c: _Context | None) -> None:
        # One lock for every send: the `cancelled` check and the send are atomic, so nothing for a
        # context can follow its `done` (cancelled), which is sent under the same lock.
        async with self._send_lock:
            if self._gone or (c is not None and c.cancelled):
                return
            try:
                await self.receiver.send(payload)
            except (WebSocketDisconnect, RuntimeError, OSError, SlowConsumer):  # closed under us, or by `send`
                self._gone = True


def native_router(ctx: ServerContext) -> APIRouter:
    router = APIRouter()

    @router.websocket("/v1/tts/ws")
    async def native_ws(ws: WebSocket) -> None:
        await ws.accept()

        async def report(err: ApiError) -> None:
            try:
                await ws.send_text(_Connection._error(err, None))
            except (WebSocketDisconnect, RuntimeError, OSError):
                pass  # gone already: the close that follows is all there is to do

        client = await authenticate_ws(ws, report)
        if client is None:
            return
        await _Connection(ws, ctx, client).run()

    return router
