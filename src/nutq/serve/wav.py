"""A RIFF/WAVE header for a stream whose length is not known when the header is sent.

A WAV file states its length twice (RIFF chunk size, data chunk size) before the samples. A stream
cannot know it up front and cannot seek back, so both sizes are written as 0xFFFFFFFF, the
"unknown / as long as the stream lasts" value that streaming TTS servers send and that ffmpeg,
libsndfile (soundfile) and browsers accept; a reader takes samples until the connection ends.
Python's `wave` module is stricter and refuses such a header.

Format tags: 1 = integer PCM, 3 = IEEE float, 6 = A-law, 7 = mu-law. The non-PCM tags use the
18-byte WAVEFORMATEX `fmt ` chunk (cbSize = 0) that the spec asks for; the `fact` chunk those tags
nominally need holds a sample count, which a stream does not have, and readers do not require it.
"""

from __future__ import annotations

import struct

__all__ = ["UNKNOWN_SIZE", "streaming_wav_header"]

UNKNOWN_SIZE = 0xFFFF_FFFF

_TAGS = {"pcm_s16le": (1, 16), "pcm_f32le": (3, 32), "alaw": (6, 8), "mulaw": (7, 8)}


def streaming_wav_header(codec: str, sample_rate: int, channels: int = 1) -> bytes:
    """The bytes before the first sample of a WAV stream of unknown length (44 or 46 bytes)."""
    if codec not in _TAGS:
        raise ValueError(f"WAV streams carry {', '.join(_TAGS)}, not {codec!r}")
    tag, bits = _TAGS[codec]
    block_align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, sample_rate, sample_rate * block_align, block_align, bits)
    if tag != 1:
        fmt += struct.pack("<H", 0)  # cbSize: no extension bytes
    return (b"RIFF" + struct.pack("<I", UNKNOWN_SIZE) + b"WAVE"
            + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", UNKNOWN_SIZE))
