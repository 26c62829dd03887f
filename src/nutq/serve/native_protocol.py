"""The native WebSocket protocol (`/v1/tts/ws`): every message either side may send, as pydantic
models. These models are the protocol's single source of truth: the handler (`native_ws`) parses
with them, the JSON schemas are generated from them, and docs/protocols/native.md explains them.

    python -m nutq.serve.native_protocol --schema > docs/protocols/native.schema.json

Client messages are JSON text frames with a `type`: `config`, `text`, `flush`, `cancel`,
`close_context`. Server messages are JSON text frames (`audio` in base64 mode, `timestamps`,
`flushed`, `done`, `error`) and, in binary mode, audio frames laid out as

    [n: 1 byte][context_id: n bytes, ASCII][encoded audio bytes]

One self-describing frame per chunk (rather than a JSON header followed by a binary frame) means a
client never has to pair two frames up, and audio of two contexts can never be attributed wrongly
however their chunks interleave; the cost is 1 + len(context_id) bytes per chunk.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from .synthesis_fields import SynthesisFields

__all__ = [
    "AudioMessage", "CancelMessage", "ClientMessage", "CloseContextMessage", "ConfigMessage", "DoneMessage",
    "ErrorMessage", "FlushMessage", "FlushedMessage", "ServerMessage", "SpeakSettings", "TextMessage",
    "Timings", "TimestampsMessage", "WordTiming", "CLIENT_MESSAGES", "MAX_CONTEXT_ID", "pack_audio_frame",
    "unpack_audio_frame", "schemas",
]

MAX_CONTEXT_ID = 64
ContextId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CONTEXT_ID, pattern=r"^[A-Za-z0-9._:-]+$")]


# strict: "0.5" is not a number and 1 is not a string; a client's type mistakes are reported,
# not guessed at. forbid: a misspelt field is an error, not silently ignored.
_STRICT = ConfigDict(extra="forbid", strict=True, frozen=True)


class _Message(BaseModel):
    model_config = _STRICT


# ---------------------------------------------------------------------------------------- client


class SpeakSettings(SynthesisFields):
    """How a context is spoken. Every field has the server's default; a `config` message changes
    only the fields it names. The synthesis options (seed, max_tokens, temperature, cfg_weight,
    exaggeration, normalize, diacritize) are the ones every nutq protocol shares; here phrase i of
    a context is sampled with seed + i."""

    model_config = _STRICT

    voice: str = Field("default", min_length=1, max_length=128,
                       description="a registered voice id, or 'default' for the checkpoint's built-in voice")
    language: str | None = Field(None, min_length=1,
                                 description="language code (e.g. 'ar'); null: the server's default")
    output_format: str = Field("pcm_s16le", description="pcm_s16le, pcm_f32le, wav, wav_f32, mulaw, alaw, mp3, "
                                                       "opus (Ogg), webm_opus, flac or aac")
    sample_rate: int | None = Field(None, description="output rate in Hz; null: the format's default "
                                                      "(24000, or 8000 for mulaw/alaw)")
    audio_mode: Literal["binary", "base64"] = Field(
        "binary", description="binary: audio in binary frames (see the spec for the framing); "
                              "base64: audio in JSON `audio` messages")
    timestamps: bool = Field(True, description="send word `timestamps` messages")


class ConfigMessage(SpeakSettings):
    """Without `context_id`: the defaults of contexts created later on this connection. With one:
    the settings of that (new) context, on top of the connection's defaults; it must come before the
    context's first `text`."""

    type: Literal["config"]
    context_id: ContextId | None = None

    def changes(self) -> dict:
        """The settings this message names (absent fields leave the current value unchanged)."""
        return {k: getattr(self, k) for k in self.model_fields_set if k in SpeakSettings.model_fields}


class TextMessage(_Message):
    """A piece of the context's text (any size, e.g. one LLM token). The first `text` of an unknown
    `context_id` creates the context. Complete phrases start speaking at once, before `flush`."""

    type: Literal["text"]
    context_id: ContextId
    text: str


class FlushMessage(_Message):
    """Speak everything received so far, even an unfinished phrase; `flushed` follows its audio."""

    type: Literal["flush"]
    context_id: ContextId


class CancelMessage(_Message):
    """Barge-in: stop generating within one decode step and drop the unspoken text. Nothing more is
    sent for the context but one `done` with reason `cancelled`; its id may then be reused."""

    type: Literal["cancel"]
    context_id: ContextId


class CloseContextMessage(_Message):
    """Speak what remains (as `flush` would), then end the context with `done` (reason `closed`)."""

    type: Literal["close_context"]
    context_id: ContextId


ClientMessage = Annotated[Union[ConfigMessage, TextMessage, FlushMessage, CancelMessage, CloseContextMessage],
                          Field(discriminator="type")]
CLIENT_MESSAGES = ("config", "text", "flush", "cancel", "close_context")


# ---------------------------------------------------------------------------------------- server


class AudioMessage(_Message):
    """A chunk of the context's encoded audio (base64 mode only; binary mode sends a frame)."""

    type: Literal["audio"] = "audio"
    context_id: str
    seq: int = Field(description="0, 1, 2, ... per context")
    audio: str = Field(description="base64 of the encoded bytes; concatenating a context's chunks gives "
                                   "one continuous stream in its output format")


class WordTiming(_Message):
    word: str = Field(description="the word as the client wrote it (a whitespace-delimited slice of its text)")
    start: float = Field(description="seconds from the start of the context's audio")
    end: float
    char_start: int = Field(description="offset of the word in the context's text: all its `text` pieces "
                                        "joined, counted in Unicode code points")
    char_end: int


class TimestampsMessage(_Message):
    """Words whose timing is now known, in order; sent after the audio chunk that completed them."""

    type: Literal["timestamps"] = "timestamps"
    context_id: str
    words: list[WordTiming]


class FlushedMessage(_Message):
    """All audio of the text received before the matching `flush` has been sent."""

    type: Literal["flushed"] = "flushed"
    context_id: str


class Timings(_Message):
    first_audio_latency_s: float | None = Field(
        description="from receiving the message that made the first phrase speakable to its first audio")
    rtf: float | None = Field(description="real-time factor: synthesis wall time / audio duration")
    audio_s: float = Field(description="seconds of audio sent")
    phrases: int = Field(description="phrases spoken (each is one engine stream)")


class DoneMessage(_Message):
    """The context is over and its id free again: after its last audio (`closed`), at once on
    `cancel` (`cancelled`), after an `error` that ended it (`error`), or after the `error` (code
    `server_draining`) of a context cut off by a shutting-down server (`server_draining`)."""

    type: Literal["done"] = "done"
    context_id: str
    reason: Literal["closed", "cancelled", "error", "server_draining"]
    timings: Timings


class ErrorMessage(_Message):
    """Something went wrong; the connection stays open unless a close frame follows."""

    type: Literal["error"] = "error"
    code: str = Field(description="stable machine-readable code (see the spec's table)")
    message: str
    retryable: bool = Field(description="the same request may succeed later unchanged (busy, draining)")
    context_id: str | None = None
    param: str | None = Field(None, description="the offending field, when there is one")


ServerMessage = Annotated[Union[AudioMessage, TimestampsMessage, FlushedMessage, DoneMessage, ErrorMessage],
                          Field(discriminator="type")]


# ---------------------------------------------------------------------------------- binary audio


def pack_audio_frame(context_id: str, data: bytes) -> bytes:
    """A binary-mode audio frame: context id length (1 byte), the id (ASCII), the audio bytes."""
    cid = context_id.encode("ascii")
    if not 0 < len(cid) <= MAX_CONTEXT_ID:
        raise ValueError(f"context_id must be 1..{MAX_CONTEXT_ID} ASCII characters")
    return bytes([len(cid)]) + cid + data


def unpack_audio_frame(frame: bytes) -> tuple[str, bytes]:
    """(context_id, audio bytes) of a binary-mode audio frame."""
    if not frame or len(frame) < 1 + frame[0] or frame[0] == 0:
        raise ValueError("not a native audio frame: too short for its context id")
    n = frame[0]
    return frame[1:1 + n].decode("ascii"), frame[1 + n:]


def schemas() -> dict:
    """JSON schemas of both directions (what `--schema` prints)."""
    return {
        "title": "nutq native WebSocket protocol (/v1/tts/ws)",
        "client": TypeAdapter(ClientMessage).json_schema(),
        "server": TypeAdapter(ServerMessage).json_schema(mode="serialization"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nutq.serve.native_protocol", description=__doc__.split("\n")[0])
    parser.add_argument("--schema", action="store_true", help="print the JSON schemas of all messages")
    args = parser.parse_args(argv)
    if not args.schema:
        parser.print_help()
        return 2
    json.dump(schemas(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
