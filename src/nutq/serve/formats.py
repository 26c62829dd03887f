"""Output audio formats: what a client may ask for, under each protocol's names, and its MIME type.

An `OutputFormat` is a codec in a container at a sample rate. The engine always produces 24 kHz mono
float32; every other rate is reached by resampling in the encoder. Three vocabularies map onto it:

| protocol | names                                                                        |
|----------|------------------------------------------------------------------------------|
| native   | pcm_s16le, pcm_f32le, wav, wav_f32, mulaw, alaw, mp3, opus (Ogg), webm_opus, flac, aac |
| openai   | `response_format`: pcm (24 kHz s16le unless a rate is given), wav, mp3, opus, flac, aac |
| deepgram | `encoding`: linear16, mulaw, alaw, mp3, opus, flac, aac (+ `container`: none, wav, ogg)  |

Sample rates: 8000, 16000, 22050, 24000, 32000, 44100, 48000 (32000 is in Deepgram's linear16
list). Opus only codes 8/12/16/24/48 kHz, so 22050, 32000 and 44100 are refused for it. G.711
(mulaw, alaw) defaults to 8 kHz, everything else to the engine's 24 kHz.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import NutqError
from ..rates import SAMPLE_RATE

__all__ = [
    "ENGINE_SAMPLE_RATE",
    "SAMPLE_RATES",
    "PROTOCOLS",
    "OutputFormat",
    "UnsupportedFormat",
    "parse_format",
    "supported_names",
]

ENGINE_SAMPLE_RATE = SAMPLE_RATE  # what the vocoder produces; every encoder's input rate
SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
PROTOCOLS = ("native", "openai", "deepgram")


class UnsupportedFormat(NutqError, ValueError):
    """The requested codec, container, sample rate, channel count or bit rate is not offered."""


@dataclass(frozen=True)
class _Codec:
    containers: tuple[str, ...]  # first = the codec's natural container
    rates: tuple[int, ...]
    default_rate: int
    bit_rate: tuple[int, int, int] | None  # (min, default, max) in bit/s; None = not adjustable


_ALL = SAMPLE_RATES
_CODECS: dict[str, _Codec] = {
    "pcm_s16le": _Codec(("raw", "wav"), _ALL, ENGINE_SAMPLE_RATE, None),
    "pcm_f32le": _Codec(("raw", "wav"), _ALL, ENGINE_SAMPLE_RATE, None),
    "mulaw": _Codec(("raw", "wav"), _ALL, 8000, None),
    "alaw": _Codec(("raw", "wav"), _ALL, 8000, None),
    # 64 kbit/s is transparent-enough for mono speech at <= 24 kHz; LAME snaps to the nearest
    # standard bit rate of the MPEG version the sample rate implies.
    "mp3": _Codec(("mp3",), _ALL, ENGINE_SAMPLE_RATE, (8_000, 64_000, 320_000)),
    "opus": _Codec(("ogg", "webm"), (8000, 16000, 24000, 48000), ENGINE_SAMPLE_RATE, (6_000, 32_000, 510_000)),
    "flac": _Codec(("flac",), _ALL, ENGINE_SAMPLE_RATE, None),
    "aac": _Codec(("adts",), _ALL, ENGINE_SAMPLE_RATE, (8_000, 64_000, 320_000)),
}

# name -> (codec, container or None for the codec's natural one), per protocol.
_NAMES: dict[str, dict[str, tuple[str, str | None]]] = {
    "native": {
        "pcm_s16le": ("pcm_s16le", "raw"),
        "pcm_f32le": ("pcm_f32le", "raw"),
        "wav": ("pcm_s16le", "wav"),
        "wav_f32": ("pcm_f32le", "wav"),
        "mulaw": ("mulaw", "raw"),
        "alaw": ("alaw", "raw"),
        "mp3": ("mp3", None),
        "opus": ("opus", "ogg"),
        "webm_opus": ("opus", "webm"),
        "flac": ("flac", None),
        "aac": ("aac", None),
    },
    "openai": {
        "pcm": ("pcm_s16le", "raw"),
        "wav": ("pcm_s16le", "wav"),
        "mp3": ("mp3", None),
        "opus": ("opus", "ogg"),
        "flac": ("flac", None),
        "aac": ("aac", None),
    },
    "deepgram": {
        "linear16": ("pcm_s16le", None),
        "mulaw": ("mulaw", None),
        "alaw": ("alaw", None),
        "mp3": ("mp3", None),
        "opus": ("opus", None),
        "flac": ("flac", None),
        "aac": ("aac", None),
    },
}
# Deepgram's `container` values: "none" means headerless, the rest are container names.
_DEEPGRAM_CONTAINERS = {"none": "raw", "wav": "wav", "ogg": "ogg"}


@dataclass(frozen=True)
class OutputFormat:
    """A codec in a container at a sample rate; validated on construction.

    codec: pcm_s16le | pcm_f32le | mulaw | alaw | mp3 | opus | flac | aac
    container: raw (headerless) | wav | mp3 | ogg | webm | flac | adts — see `_CODECS` for pairs.
    bit_rate: bit/s for mp3/opus/aac (None = the codec's default); must be None for the others.
    """

    codec: str
    container: str
    sample_rate: int
    channels: int = 1
    bit_rate: int | None = None

    def __post_init__(self) -> None:
        spec = _CODECS.get(self.codec)
        if spec is None:
            raise UnsupportedFormat(f"unknown codec {self.codec!r}; supported: {', '.join(_CODECS)}")
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
        spec = _CODECS[self.codec].bit_rate
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


def supported_names(protocol: str = "native") -> tuple[str, ...]:
    """The format names `parse_format` accepts under a protocol."""
    _check_protocol(protocol)
    return tuple(_NAMES[protocol])


def _check_protocol(protocol: str) -> None:
    if protocol not in _NAMES:
        raise ValueError(f"unknown protocol {protocol!r}; one of {', '.join(PROTOCOLS)}")


def parse_format(
    name: str,
    sample_rate: int | str | None = None,
    *,
    protocol: str = "native",
    container: str | None = None,
    bit_rate: int | str | None = None,
) -> OutputFormat:
    """A format name as a protocol spells it (+ optional rate, container, bit rate) -> OutputFormat.

    `container` is Deepgram's parameter (none | wav | ogg); other protocols name the container in
    `name` itself. Rates and bit rates may come as strings (query parameters). Case-insensitive;
    "-" and "_" are interchangeable in native names ("webm-opus").
    """
    _check_protocol(protocol)
    table = _NAMES[protocol]
    key = str(name).strip().lower().replace("-", "_")
    if key not in table:
        raise UnsupportedFormat(
            f"unsupported {protocol} format {name!r}; supported: {', '.join(table)}")
    codec, fixed_container = table[key]
    spec = _CODECS[codec]

    if container is not None:
        if protocol != "deepgram":
            raise UnsupportedFormat(f"a separate container is only a Deepgram parameter, not {protocol}'s")
        if container.lower() not in _DEEPGRAM_CONTAINERS:
            raise UnsupportedFormat(
                f"unsupported container {container!r}; supported: {', '.join(_DEEPGRAM_CONTAINERS)}")
        chosen = _DEEPGRAM_CONTAINERS[container.lower()]
        # Deepgram spells "the codec's own stream" as container=none for mp3/flac/aac.
        if chosen == "raw" and "raw" not in spec.containers:
            chosen = spec.containers[0]
    else:
        chosen = fixed_container or spec.containers[0]

    rate = spec.default_rate if sample_rate is None else _as_int(sample_rate, "sample_rate")
    bits = None if bit_rate is None else _as_int(bit_rate, "bit_rate")
    return OutputFormat(codec=codec, container=chosen, sample_rate=rate, bit_rate=bits)


def _as_int(value: int | str, what: str) -> int:
    if isinstance(value, bool):  # bool is an int subclass; True is never a sample rate
        raise UnsupportedFormat(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise UnsupportedFormat(f"{what} must be an integer, got {value!r}") from None
