"""OpenAI-compatible `POST /v1/audio/speech`, streamed while it is generated.

The request body is `SpeechRequest` (OpenAI's fields plus nutq's extensions, unknown fields
refused). `stream_format="audio"` sends the encoded audio as a chunked body; `"sse"` sends
`speech.audio.delta` events (base64 of the same encoded bytes) and one `speech.audio.done`.

The first chunk is awaited before any header goes out, so every error in starting synthesis
(unknown voice or language, all KV slots leased) still gets its status code; after that, a
failure cuts an audio body short or ends an SSE stream with an `error` event.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .audio_out import Encoder, make_encoder
from .context import LiveStream, ServerContext
from .extensions import synthesis_request
from .errors import api_error_from
from .formats import OutputFormat, parse_format
from .response import LiveAudioResponse
from .synthesis_fields import SynthesisFields
from .voice_names import resolve_voice

__all__ = ["SpeechRequest", "VoiceRef", "openai_router"]

PROTOCOL = "openai"


class VoiceRef(BaseModel):
    """OpenAI's custom-voice form of `voice`, `{"id": "..."}`: here, a voice id."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)


class SpeechRequest(SynthesisFields):
    """Body of `POST /v1/audio/speech`. `model` is accepted for compatibility: one model is served.
    The synthesis options (seed, max_tokens, temperature, cfg_weight, exaggeration, normalize,
    diacritize) are the fields every protocol shares (`synthesis_fields.SynthesisFields`)."""

    # strict: "1" is not a seed and true is not a number; type mistakes are reported, not guessed at
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1)
    input: str = Field(min_length=1, description="text to speak; at most ServeConfig.max_input_chars")
    voice: str | VoiceRef = Field(description="a registered voice id ('default': the built-in voice), an alias "
                                  "(nutq serve --voice-alias), one of OpenAI's voice names (the default voice unless "
                                  "aliased), or {\"id\": voice id}")
    instructions: str | None = Field(None, description="not supported; must be empty")
    response_format: str = Field("mp3", description="pcm (s16le), wav, mp3, opus (Ogg), flac or aac")
    speed: float = Field(1.0, ge=0.25, le=4.0, description="only 1.0 is implemented")
    stream_format: Literal["audio", "sse"] = "audio"
    # nutq extensions (send them with the SDK's `extra_body`)
    language: str | None = Field(None, min_length=1, description="language code; default ServeConfig.default_language")
    sample_rate: int | None = Field(None, description="output rate in Hz (the format's default when absent)")

    @field_validator("speed")
    @classmethod
    def _only_natural_speed(cls, v: float) -> float:
        if v != 1.0:
            raise ValueError("only speed 1.0 is supported")
        return v

    @field_validator("instructions")
    @classmethod
    def _no_instructions(cls, v: str | None) -> str | None:
        if v:
            raise ValueError("instructions are not supported by this model; use exaggeration and cfg_weight")
        return v

    @field_validator("voice")
    @classmethod
    def _voice_named(cls, v: str | VoiceRef) -> str | VoiceRef:
        if isinstance(v, str) and not v:
            raise ValueError("voice must not be empty")
        return v

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceRef) else self.voice

    def output_format(self) -> OutputFormat:
        return parse_format(self.response_format, self.sample_rate, protocol="openai")


async def _audio(stream: LiveStream, enc: Encoder) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield await enc.aencode(chunk.audio)
        yield enc.finish()
    finally:  # also when the response closes this generator early (client gone)
        await stream.aclose()


def _event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def _sse(stream: LiveStream, enc: Encoder) -> AsyncIterator[bytes]:
    def delta(data: bytes) -> bytes:
        return _event({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()}) if data else b""

    try:
        async for piece in _audio(stream, enc):
            yield delta(piece)
    except Exception as e:  # noqa: BLE001 - reported in-band: the 200 status is already sent
        yield _event({"type": "error", **api_error_from(e).body()})
        return
    inner = stream.stream
    n_in = sum(len(p.ids) for p in inner.phrases)
    n_out = sum(len(s.tokens) for s in inner.sessions)
    yield _event({"type": "speech.audio.done",
                  "usage": {"input_tokens": n_in, "output_tokens": n_out, "total_tokens": n_in + n_out}})


def openai_router(ctx: ServerContext) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/audio/speech")
    async def speech(req: SpeechRequest, request: Request):
        try:
            fmt = req.output_format()
            voice = await resolve_voice(ctx, req.voice_name, PROTOCOL)
            opts = synthesis_request(req, req.input, voice, req.language, ctx.config.max_new_tokens, fmt)
            enc = make_encoder(opts.output)
        except Exception as e:  # noqa: BLE001 - mapped to the client's status code
            raise api_error_from(e, ctx.config.retry_after_s) from e
        stream = await ctx.open_stream(opts, client=request.state.client, protocol=PROTOCOL)
        if req.stream_format == "sse":
            return LiveAudioResponse(_sse(stream, enc), media_type="text/event-stream", stream=stream,
                                     headers={"Cache-Control": "no-cache"})
        return LiveAudioResponse(_audio(stream, enc), media_type=opts.output.content_type, stream=stream)

    return router
