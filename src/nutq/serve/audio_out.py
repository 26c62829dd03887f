"""Per-connection audio encoders: engine chunks (float32, 24 kHz, mono) in, wire bytes out.

    fmt = parse_format("mulaw", protocol="deepgram")      # or OutputFormat(...)
    enc = make_encoder(fmt)
    for chunk in stream:                                   # AudioChunk.audio arrays
        send(enc.encode(chunk.audio))                      # may be b"" while a codec fills a frame
    send(enc.finish())                                     # the tail; idempotent

Every byte a call returns is final and can be sent at once: headers go out with the first call,
containers are framed per call (no muxer holds pages or clusters back), and only a codec's own
frame (Opus 20 ms, AAC 1024 samples, MP3 576/1152 samples plus LAME's look-ahead) and the
resampler's filter delay (a few ms) wait for more input. FLAC is the exception: its header must
hold the total length, so the file is sent whole by `finish()` (see `_FlacEncoder`).

Samples are resampled with soxr's streaming resampler (chunked output equals one-shot
`soxr.resample` exactly), then clipped to [-1, 1], then quantized (x * 32767, rounded) for the
16-bit and G.711 formats. An encoder serves one stream and is not thread-safe.

Codec packages: PCM, WAV and G.711 need only numpy and soxr; mp3 needs `lameenc`; Opus (Ogg,
WebM), FLAC and AAC need PyAV (`av`). Both come with the `serve` extra.
"""

from __future__ import annotations

import asyncio
import secrets
import struct

import numpy as np
import soxr

from . import g711
from .av_codec import AvPacketEncoder, Packet
from .formats import ENGINE_SAMPLE_RATE, OutputFormat, UnsupportedFormat, parse_format
from .ogg import OggPageWriter, opus_tags
from .wav import streaming_wav_header
from .webm import WebmOpusWriter

__all__ = ["Encoder", "OutputFormat", "UnsupportedFormat", "make_encoder", "parse_format", "to_int16"]

_OPUS_RATE = 48_000  # Opus timestamps and pre-skip always count 48 kHz samples
_MP3_QUALITY = 5  # LAME's algorithm quality (2 best .. 7 fastest); 5 is LAME's own default


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16, scaled by 32767 so that +1 and -1 map symmetrically."""
    return np.rint(x * 32767.0).astype(np.int16)


def _check_chunk(chunk: np.ndarray) -> np.ndarray:
    if not isinstance(chunk, np.ndarray):
        raise TypeError(f"encode() takes a numpy array of float samples, got {type(chunk).__name__}")
    if chunk.ndim != 1:
        raise ValueError(f"encode() takes mono samples of shape (N,), got shape {chunk.shape}")
    if not np.issubdtype(chunk.dtype, np.floating):
        raise TypeError(f"encode() takes float samples in [-1, 1], got dtype {chunk.dtype}")
    x = chunk.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise ValueError("encode() got NaN or infinite samples")
    return x


class Encoder:
    """One output stream: `encode(chunk) -> bytes` as chunks arrive, then `finish() -> bytes`.

    Subclasses say what goes first (`_header`), how samples at the output rate become bytes
    (`_samples`), and what the end adds (`_tail`).
    """

    def __init__(self, fmt: OutputFormat) -> None:
        self.format = fmt
        self._resampler = None
        if fmt.sample_rate != ENGINE_SAMPLE_RATE:
            self._resampler = soxr.ResampleStream(ENGINE_SAMPLE_RATE, fmt.sample_rate, 1, dtype="float32", quality="HQ")
        self._started = False
        self._finished = False

    @property
    def content_type(self) -> str:
        return self.format.content_type

    @property
    def finished(self) -> bool:
        return self._finished

    # Compressing codecs take milliseconds per chunk: under load they would stall the event loop
    # that serves every other stream, so `aencode` runs them in a worker thread. PCM and G.711
    # are cheaper than the thread hop.
    _heavy = False

    async def aencode(self, chunk: np.ndarray) -> bytes:
        """`encode` for async servers: off the event loop when the codec is expensive."""
        if self._heavy or self._resampler is not None:
            return await asyncio.to_thread(self.encode, chunk)
        return self.encode(chunk)

    def encode(self, chunk: np.ndarray) -> bytes:
        """Bytes ready after this chunk (float32 mono at 24 kHz); possibly b"" mid-frame."""
        if self._finished:
            raise RuntimeError("encode() after finish(): this encoder's stream is closed")
        x = _check_chunk(chunk)
        if self._resampler is not None:
            x = self._resampler.resample_chunk(x)
        return self._begin() + self._samples(np.clip(x, -1.0, 1.0))

    def finish(self) -> bytes:
        """The rest of the stream (resampler and codec tails, end marks); b"" when called again."""
        if self._finished:
            return b""
        self._finished = True
        out = self._begin()
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            out += self._samples(np.clip(tail, -1.0, 1.0))
        return out + self._tail()

    def _begin(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return self._header()

    def _header(self) -> bytes:
        return b""

    def _samples(self, x: np.ndarray) -> bytes:
        raise NotImplementedError

    def _tail(self) -> bytes:
        return b""


class _PcmEncoder(Encoder):
    """16-bit or float PCM, or G.711, headerless or after a streaming WAV header."""

    def _header(self) -> bytes:
        if self.format.container == "wav":
            return streaming_wav_header(self.format.codec, self.format.sample_rate)
        return b""

    def _samples(self, x: np.ndarray) -> bytes:
        codec = self.format.codec
        if codec == "pcm_f32le":
            return x.astype("<f4", copy=False).tobytes()
        pcm = to_int16(x)
        if codec == "mulaw":
            return g711.ulaw_encode(pcm).tobytes()
        if codec == "alaw":
            return g711.alaw_encode(pcm).tobytes()
        return pcm.astype("<i2", copy=False).tobytes()


class _Mp3Encoder(Encoder):
    """Constant-bit-rate MP3 frames from LAME; the frames are self-delimiting, no container."""

    _heavy = True

    def __init__(self, fmt: OutputFormat) -> None:
        super().__init__(fmt)
        try:
            import lameenc
        except ImportError:
            raise UnsupportedFormat("mp3 output needs lameenc: pip install 'nutq[serve]' (or pip install lameenc)") from None
        lame = lameenc.Encoder()
        lame.set_channels(1)
        lame.set_in_sample_rate(fmt.sample_rate)
        # Without this LAME picks its own output rate from the bit rate (e.g. halves 44.1 kHz).
        lame.set_out_sample_rate(fmt.sample_rate)
        lame.set_bit_rate(fmt.effective_bit_rate // 1000)
        lame.set_quality(_MP3_QUALITY)
        self._lame = lame
        self._fed = False

    def _samples(self, x: np.ndarray) -> bytes:
        if not len(x):
            return b""
        self._fed = True
        return bytes(self._lame.encode(to_int16(x).astype("<i2", copy=False).tobytes()))

    def _tail(self) -> bytes:
        # LAME refuses to flush an encoder that never got a sample ("Not currently encoding"): a
        # stream whose tokens were all non-speech ids has no audio, and ends as an empty body.
        return bytes(self._lame.flush()) if self._fed else b""


class _FlacEncoder(Encoder):
    """A whole FLAC file, sent at the end: "fLaC", the final STREAMINFO block, then every frame.

    STREAMINFO must come first and holds the total sample count, which a live stream cannot know
    yet; it could only send 0 ("unknown"). libsndfile, and so `soundfile`, trusts that count:
    with 0 it sizes a read for 2**63 samples ("array is too big"), and with a guess too large it
    fails at the end of the data. So the frames are kept (a few hundred kB per minute) until
    `finish`, whose STREAMINFO from the encoder carries the exact count, the MD5 of the samples and
    the frame sizes: a file every reader (soundfile, PyAV, ffprobe) takes, at the cost of sending
    nothing before synthesis ends. Clients that play while receiving want pcm, wav, mp3 or opus.
    A stream without audio is a header without frames, which FLAC cannot tell from "length
    unknown" (a count of 0 means both): PyAV reads it as empty, libsndfile refuses it.
    """

    _heavy = True


    def __init__(self, fmt: OutputFormat) -> None:
        super().__init__(fmt)
        self._codec = AvPacketEncoder("flac", fmt.sample_rate, None)
        self._frames: list[bytes] = []

    def _samples(self, x: np.ndarray) -> bytes:
        self._frames += [p.data for p in self._codec.encode(to_int16(x))]
        return b""

    def _tail(self) -> bytes:
        self._frames += [p.data for p in self._codec.flush()]
        info = self._codec.final_extradata
        if info is None:  # a PyAV without side data: the count is right, the MD5 is not; 0 = "not computed"
            info = self._codec.extradata[:18] + bytes(16)
        last_block_streaminfo = 0x80  # "last metadata block" flag | block type 0 (STREAMINFO)
        header = b"fLaC" + bytes([last_block_streaminfo]) + len(info).to_bytes(3, "big") + info
        return header + b"".join(self._frames)


# ADTS sampling-frequency index (ISO/IEC 14496-3, Table 1.18).
_AAC_RATE_INDEX = {96000: 0, 88200: 1, 64000: 2, 48000: 3, 44100: 4, 32000: 5, 24000: 6,
                   22050: 7, 16000: 8, 12000: 9, 11025: 10, 8000: 11, 7350: 12}


class _AdtsEncoder(Encoder):
    """AAC-LC frames, each behind a 7-byte ADTS header (the streamable form of AAC, audio/aac).

    ADTS cannot signal the encoder's 1024-sample priming, so decoders play it: the decoded stream
    starts with ~43 ms (at 24 kHz) of near-silence and ends padded to a whole frame.
    """

    _heavy = True


    def __init__(self, fmt: OutputFormat) -> None:
        super().__init__(fmt)
        self._codec = AvPacketEncoder("aac", fmt.sample_rate, fmt.effective_bit_rate)
        # AudioSpecificConfig starts with 5 bits of object type (2 = AAC-LC).
        self._profile = (self._codec.extradata[0] >> 3) - 1
        self._rate_index = _AAC_RATE_INDEX[fmt.sample_rate]

    def _frame(self, payload: bytes) -> bytes:
        n = len(payload) + 7  # frame length includes the header
        channels = 1
        # 56 bits, most significant first: sync 0xFFF, ID 0 (MPEG-4), layer 00, protection absent
        # (no CRC), profile, rate index, private 0, channel config, 4 flag bits 0, frame length,
        # buffer fullness 0x7FF (variable rate), raw data blocks - 1 = 0.
        bits = ((0xFFF << 44) | (1 << 40) | (self._profile << 38) | (self._rate_index << 34)
                | (channels << 30) | (n << 13) | (0x7FF << 2))
        return bits.to_bytes(7, "big") + payload

    def _packets(self, packets: list[Packet]) -> bytes:
        return b"".join(self._frame(p.data) for p in packets)

    def _samples(self, x: np.ndarray) -> bytes:
        return self._packets(self._codec.encode(x))

    def _tail(self) -> bytes:
        return self._packets(self._codec.flush())


class _OpusEncoder(Encoder):
    """Opus in Ogg (RFC 7845) or in WebM, framed per call by our own page/cluster writers."""

    _heavy = True


    def __init__(self, fmt: OutputFormat) -> None:
        super().__init__(fmt)
        self._codec = AvPacketEncoder("opus", fmt.sample_rate, fmt.effective_bit_rate)
        self._head = self._codec.extradata  # the OpusHead packet, built by the encoder
        self._pre_skip = struct.unpack_from("<H", self._head, 10)[0]  # in 48 kHz samples
        self._to_48k = _OPUS_RATE // fmt.sample_rate  # exact: Opus rates divide 48 kHz
        if fmt.container == "ogg":
            self._ogg = OggPageWriter(serial=secrets.randbits(32))
        else:
            self._webm = WebmOpusWriter(self._head, self._pre_skip)

    def _header(self) -> bytes:
        if self.format.container == "ogg":
            return self._ogg.headers(self._head, opus_tags())
        return self._webm.header()

    def _frame(self, packets: list[Packet], end: bool) -> bytes:
        if self.format.container == "ogg":
            # Granule = 48 kHz samples decoded up to the packet's end, pre-skip included.
            pairs = [(p.data, (p.pts + p.duration) * self._to_48k + self._pre_skip) for p in packets]
            return self._ogg.packets(pairs, end=end)
        frame = self._codec.frame_size
        triples = []
        for p in packets:
            start_ns = (p.pts * self._to_48k + self._pre_skip) * 1_000_000_000 // _OPUS_RATE
            discard_ns = max(frame - p.duration, 0) * 1_000_000_000 // self.format.sample_rate
            triples.append((p.data, start_ns, discard_ns))
        return self._webm.packets(triples)

    def _samples(self, x: np.ndarray) -> bytes:
        return self._frame(self._codec.encode(x), end=False)

    def _tail(self) -> bytes:
        return self._frame(self._codec.flush(), end=True)


_ENCODERS: dict[str, type[Encoder]] = {
    "pcm_s16le": _PcmEncoder,
    "pcm_f32le": _PcmEncoder,
    "mulaw": _PcmEncoder,
    "alaw": _PcmEncoder,
    "mp3": _Mp3Encoder,
    "flac": _FlacEncoder,
    "aac": _AdtsEncoder,
    "opus": _OpusEncoder,
}


def make_encoder(fmt: OutputFormat) -> Encoder:
    """A fresh encoder for one stream. Raises UnsupportedFormat (naming the `serve` extra) when the
    codec's package is not installed."""
    if not isinstance(fmt, OutputFormat):
        raise TypeError(f"make_encoder takes an OutputFormat (see parse_format), got {type(fmt).__name__}")
    return _ENCODERS[fmt.codec](fmt)
