"""Output audio formats: what a client may ask for, under each protocol's names, and its MIME type.

An `OutputFormat` (`engine.output`, part of every `SynthesisRequest`) is a codec in a container at
a sample rate; here, each protocol's names for them (`parse_format`). The engine always produces
24 kHz mono float32; every other rate is reached by resampling in the encoder. Three vocabularies
map onto it:

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

from ..engine.output import CODECS, SAMPLE_RATES, OutputFormat, UnsupportedFormat
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
PROTOCOLS = ("native", "openai", "deepgram")


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
    spec = CODECS[codec]

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
