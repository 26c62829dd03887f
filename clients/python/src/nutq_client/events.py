"""What a context yields while it is spoken (`async for event in ctx`), and the native protocol's
wire details the client needs: the binary audio frame and the JSON server messages."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .errors import NutqError

__all__ = ["Audio", "Word", "Timestamps", "Flushed", "Timings", "Done", "Resumed", "Speech", "Event",
           "unpack_audio_frame", "parse_server_message", "bytes_per_sample"]

# Bytes per sample of the formats whose chunks are plain samples (durations can be counted).
_RAW_WIDTH = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1, "alaw": 1}


def bytes_per_sample(output_format: str) -> int | None:
    """Sample width of a headerless PCM/G.711 format; None for containers and codecs."""
    return _RAW_WIDTH.get(output_format)


@dataclass(frozen=True)
class Audio:
    """One chunk of a context's encoded audio. Concatenating a context's chunks gives one stream in
    its `output_format` (after a `Resumed` event, a new stream: a container format starts again)."""

    context_id: str
    data: bytes
    output_format: str
    sample_rate: int

    @property
    def samples(self) -> int | None:
        width = bytes_per_sample(self.output_format)
        return None if width is None else len(self.data) // width

    def numpy(self):
        """The chunk as float32 samples in [-1, 1] (pcm_s16le and pcm_f32le only; needs numpy)."""
        try:
            import numpy as np
        except ImportError:
            raise NutqError("numpy_missing", "Audio.numpy() needs numpy: pip install 'nutq-client[numpy]'") from None
        if self.output_format == "pcm_s16le":
            return np.frombuffer(self.data, dtype="<i2").astype(np.float32) / 32768.0
        if self.output_format == "pcm_f32le":
            return np.frombuffer(self.data, dtype="<f4").copy()
        raise NutqError("unsupported_format", f"numpy() decodes pcm_s16le and pcm_f32le, not {self.output_format}")


@dataclass(frozen=True)
class Word:
    word: str
    start: float  # seconds from the start of the context's audio
    end: float
    char_start: int  # offsets in all the context's text pieces joined (Unicode code points)
    char_end: int


@dataclass(frozen=True)
class Timestamps:
    context_id: str
    words: list[Word]


@dataclass(frozen=True)
class Flushed:
    """All audio of the text sent before the matching `flush()` has arrived."""

    context_id: str


@dataclass(frozen=True)
class Timings:
    first_audio_latency_s: float | None
    rtf: float | None
    audio_s: float
    phrases: int


@dataclass(frozen=True)
class Done:
    """The context is over (reason `closed`, `cancelled` or `error`); always its last event."""

    context_id: str
    reason: str
    timings: Timings


@dataclass(frozen=True)
class Resumed:
    """The connection was lost (retryable close, or the server drained) and reopened: the context
    was opened again and its text from `char_offset` on (what no `flushed` or word timestamp had
    confirmed as spoken) was sent again. Audio that follows restarts at that point of the text."""

    context_id: str
    char_offset: int
    attempt: int


Event = Audio | Timestamps | Flushed | Done | Resumed


@dataclass
class Speech:
    """Everything a context produced (`Context.collect()`, `speak()`)."""

    audio: bytes = b""
    output_format: str = "pcm_s16le"
    sample_rate: int = 24000
    words: list[Word] = field(default_factory=list)
    timings: Timings | None = None

    def numpy(self):
        return Audio("", self.audio, self.output_format, self.sample_rate).numpy()


def unpack_audio_frame(frame: bytes) -> tuple[str, bytes]:
    """(context_id, audio) of a binary audio frame: [n: 1 byte][context id: n bytes][audio]."""
    if not frame or frame[0] == 0 or len(frame) < 1 + frame[0]:
        raise NutqError("invalid_frame", "binary frame too short for its context id")
    n = frame[0]
    return frame[1:1 + n].decode("ascii"), frame[1 + n:]


def parse_server_message(text: str) -> dict:
    """A JSON server message as a dict with a `type`; a malformed one is a client-side error."""
    try:
        msg = json.loads(text)
    except ValueError as e:
        raise NutqError("invalid_server_message", f"server sent invalid JSON: {e}") from None
    if not isinstance(msg, dict) or "type" not in msg:
        raise NutqError("invalid_server_message", f"server message without a type: {text[:100]!r}")
    return msg


def timings_from(d: dict) -> Timings:
    return Timings(d.get("first_audio_latency_s"), d.get("rtf"), float(d.get("audio_s", 0.0)), int(d.get("phrases", 0)))


def words_from(items: list[dict], char_shift: int, time_shift: float) -> list[Word]:
    return [Word(w["word"], w["start"] + time_shift, w["end"] + time_shift, w["char_start"] + char_shift,
                 w["char_end"] + char_shift) for w in items]
