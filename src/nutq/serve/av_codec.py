"""Opus, FLAC and AAC packets from FFmpeg's encoders through PyAV (the optional `serve` extra).

Only the codecs are used: containers are framed by our own writers (`ogg`, `webm`, and the FLAC
and ADTS framing in `audio_out`) so that every packet can be sent the moment it exists. PyAV
re-blocks input into the codec's frame size itself, so chunks of any length can be fed.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .formats import UnsupportedFormat

__all__ = ["Packet", "AvPacketEncoder", "import_av"]


def import_av():
    """The `av` module, or an error that says how to get it."""
    try:
        import av
    except ImportError:
        raise UnsupportedFormat(
            "Opus, FLAC and AAC output need PyAV: pip install 'nutq[serve]' (or pip install av)") from None
    return av


@dataclass(frozen=True)
class Packet:
    """One coded frame; pts and duration in samples at the coding rate (pts < 0 = encoder priming)."""

    data: bytes
    pts: int
    duration: int


# codec -> (FFmpeg encoder, the sample format we hand it)
_ENCODERS = {
    "opus": ("libopus", "flt"),
    "flac": ("flac", "s16"),
    "aac": ("aac", "fltp"),
}


class AvPacketEncoder:
    """Feeds mono samples to one FFmpeg encoder and returns the packets it has completed."""

    def __init__(self, codec: str, sample_rate: int, bit_rate: int | None) -> None:
        av = import_av()
        name, self._sample_format = _ENCODERS[codec]
        try:
            ctx = av.CodecContext.create(name, "w")
        except Exception as exc:  # an FFmpeg build without this encoder
            raise UnsupportedFormat(f"this PyAV build has no {name} encoder ({exc})") from None
        ctx.sample_rate = sample_rate
        ctx.layout = "mono"
        ctx.format = self._sample_format
        ctx.time_base = Fraction(1, sample_rate)
        if bit_rate is not None:
            ctx.bit_rate = bit_rate
        if codec == "opus":
            # Tuned for speech intelligibility rather than music; same 20 ms frames.
            ctx.options = {"application": "voip"}
        ctx.open()
        self._av = av
        self._ctx = ctx
        self._rate = sample_rate
        self._next_pts = 0
        self._final_extradata: bytes | None = None

    @property
    def extradata(self) -> bytes:
        """Codec setup bytes: OpusHead, FLAC STREAMINFO, or the AAC AudioSpecificConfig."""
        return bytes(self._ctx.extradata or b"")

    @property
    def final_extradata(self) -> bytes | None:
        """After `flush`, the setup bytes the encoder revised once it had seen everything (FLAC: the
        STREAMINFO with total samples, MD5 and frame sizes); None if it sent none."""
        return self._final_extradata

    @property
    def frame_size(self) -> int:
        """Samples per coded frame at the coding rate."""
        return self._ctx.frame_size

    def encode(self, samples: np.ndarray) -> list[Packet]:
        """samples: (N,) float32 in [-1, 1] (int16 for FLAC) at the coding rate."""
        if len(samples) == 0:
            return []
        frame = self._av.AudioFrame.from_ndarray(samples[None, :], format=self._sample_format, layout="mono")
        frame.sample_rate = self._rate
        frame.time_base = Fraction(1, self._rate)
        frame.pts = self._next_pts
        self._next_pts += len(samples)
        return self._packets(self._ctx.encode(frame))

    def flush(self) -> list[Packet]:
        """Drains the encoder (the last partial frame and its look-ahead); call once at the end."""
        return self._packets(self._ctx.encode(None))

    def _packets(self, packets) -> list[Packet]:
        out = []
        for p in packets:
            if p.size:
                out.append(Packet(bytes(p), int(p.pts), int(p.duration)))
            elif hasattr(p, "has_sidedata") and p.has_sidedata("new_extradata"):  # PyAV with side data
                # FFmpeg's FLAC encoder ends with an empty packet whose side data is the final
                # STREAMINFO. (Its copy in the codec context's extradata has a stale MD5.)
                self._final_extradata = bytes(memoryview(p.get_sidedata("new_extradata")))
        return out
