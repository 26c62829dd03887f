"""`OutputFormat`: how a request's audio leaves the server (a codec in a container at a sample rate),
part of the engine's `SynthesisRequest` so that a request says everything about itself.

The engine itself always produces float32 mono at 24 kHz (`OutputFormat()` describes exactly
that); the serve encoders read a request's format to encode and resample. The format is checked
once, when it is built: an unknown codec, a codec in the wrong container, an unsupported sample
rate or bit rate raise `UnsupportedFormat` (a `ClientError`) naming what is supported. How each
protocol spells formats is the server's business (`serve.formats.parse_format`).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ClientError
from ..rates import SAMPLE_RATE

__all__ = ["CODECS", "OutputFormat", "SAMPLE_RATES", "UnsupportedFormat"]

SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)


class UnsupportedFormat(ClientError):
    """The requested codec, container, sample rate, channel count or bit rate is not offered."""


@dataclass(frozen=True)
class _Codec:
    containers: tuple[str, ...]  # first = the codec's natural container
    rates: tuple[int, ...]
    default_rate: int
    bit_rate: tuple[int, int, int] | None  # (min, default, max) in bit/s; None = not adjustable


_ALL = SAMPLE_RATES
CODECS: dict[str, _Codec] = {
    "pcm_s16le": _Codec(("raw", "wav"), _ALL, SAMPLE_RATE, None),
    "pcm_f32le": _Codec(("raw", "wav"), _ALL, SAMPLE_RATE, None),
    "mulaw": _Codec(("raw", "wav"), _ALL, 8000, None),
    "alaw": _Codec(("raw", "wav"), _ALL, 8000, None),
    # 64 kbit/s is transparent-enough for mono speech at <= 24 kHz; LAME snaps to the nearest
    # standard bit rate of the MPEG version the sample rate implies.
    "mp3": _Codec(("mp3",), _ALL, SAMPLE_RATE, (8_000, 64_000, 320_000)),
    "opus": _Codec(("ogg", "webm"), (8000, 16000, 24000, 48000), SAMPLE_RATE, (6_000, 32_000, 510_000)),
    "flac": _Codec(("flac",), _ALL, SAMPLE_RATE, None),
    "aac": _Codec(("adts",), _ALL, SAMPLE_RATE, (8_000, 64_000, 320_000)),
}


@dataclass(frozen=True)
class OutputFormat:
    """A codec in a container at a sample rate; validated on construction. The defaults are what
    the engine produces (headerless float32 at 24 kHz).

    codec: pcm_s16le | pcm_f32le | mulaw | alaw | mp3 | opus | flac | aac
    container: raw (headerless) | wav | mp3 | ogg | webm | flac | adts — see `CODECS` for pairs.
    bit_rate: bit/s for mp3/opus/aac (None = the codec's default); must be None for the others.
    """

    codec: str = "pcm_f32le"
    container: str = "raw"
    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    bit_rate: int | None = None

    def __post_init__(self) -> None:
        spec = CODECS.get(self.codec)
        if spec is None:
            raise UnsupportedFormat(f"unknown codec {self.codec!r}; supported: {', '.join(CODECS)}")
        if self.container not in spec.containers:
            raise UnsupportedFormat(
                f"codec {self.codec} cannot go in container {self.container!r}; "
                f"it goes in: {', '.join(spec.containers)}")
        if self.sample_rate not in spec.rates:
            raise UnsupportedFormat(
                f"sample rate {self.sample_rate!r} is not supported for {self.codec}; "
                f"supported: {', '.join(map(str, spec.rates))}")
        if self.channels != 1:
            raise UnsupportedFormat(f"only mono output is supported, got channels={self.channels!r}")
        if self.bit_rate is not None:
            if spec.bit_rate is None:
                raise UnsupportedFormat(f"{self.codec} has no adjustable bit rate (got bit_rate={self.bit_rate})")
            lo, _, hi = spec.bit_rate
            if not lo <= self.bit_rate <= hi:
                raise UnsupportedFormat(f"bit_rate for {self.codec} must be in [{lo}, {hi}] bit/s, got {self.bit_rate}")

    @property
    def effective_bit_rate(self) -> int | None:
        """The bit rate the encoder uses (the codec default when none was asked for)."""
        spec = CODECS[self.codec].bit_rate
        return None if spec is None else (self.bit_rate if self.bit_rate is not None else spec[1])

    @property
    def content_type(self) -> str:
        """MIME type for an HTTP Content-Type header."""
        rate = self.sample_rate
        if self.container == "raw":
            if self.codec == "pcm_s16le":
                return f"audio/pcm;rate={rate}"
            if self.codec == "pcm_f32le":
                return f"audio/pcm;rate={rate};encoding=float"
            if self.codec == "mulaw":
                # audio/basic is by definition 8 kHz mono mu-law; other rates use the RTP name.
                return "audio/basic" if rate == 8000 else f"audio/PCMU;rate={rate}"
            return f"audio/PCMA;rate={rate}"
        return {
            "wav": "audio/wav",
            "mp3": "audio/mpeg",
            "ogg": "audio/ogg;codecs=opus",
            "webm": "audio/webm;codecs=opus",
            "flac": "audio/flac",
            "adts": "audio/aac",
        }[self.container]

    def __str__(self) -> str:
        return f"{self.codec}/{self.container}@{self.sample_rate}"
