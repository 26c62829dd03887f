"""A live WebM (Matroska subset) writer for one Opus track, one Cluster per call.

Why our own writer: FFmpeg's Matroska muxer buffers the open Cluster in memory until the next
one starts, so through it each chunk's last packets would wait for the next chunk. Here the
Segment has the "unknown size" marker (a live stream; no Cues, no seeking back) and every call
writes one complete Cluster of known size holding the packets it was given.

Timestamps are in milliseconds (TimestampScale 1e6 ns). Block times count from the first decoded
sample; CodecDelay tells the reader to drop the encoder's pre-skip, and DiscardPadding on the
final block trims the last frame's padding, so the decoded length equals what was encoded.
"""

from __future__ import annotations

import struct

__all__ = ["WebmOpusWriter"]

# Element IDs (their leading bits already encode their own length).
_EBML, _EBML_VERSION, _EBML_READ_VERSION = 0x1A45DFA3, 0x4286, 0x42F7
_EBML_MAX_ID_LENGTH, _EBML_MAX_SIZE_LENGTH = 0x42F2, 0x42F3
_DOC_TYPE, _DOC_TYPE_VERSION, _DOC_TYPE_READ_VERSION = 0x4282, 0x4287, 0x4285
_SEGMENT, _INFO, _TIMESTAMP_SCALE, _MUXING_APP, _WRITING_APP = 0x18538067, 0x1549A966, 0x2AD7B1, 0x4D80, 0x5741
_TRACKS, _TRACK_ENTRY, _TRACK_NUMBER, _TRACK_UID, _TRACK_TYPE = 0x1654AE6B, 0xAE, 0xD7, 0x73C5, 0x83
_CODEC_ID, _CODEC_PRIVATE, _CODEC_DELAY, _SEEK_PRE_ROLL = 0x86, 0x63A2, 0x56AA, 0x56BB
_AUDIO, _SAMPLING_FREQUENCY, _CHANNELS = 0xE1, 0xB5, 0x9F
_CLUSTER, _TIMESTAMP, _SIMPLE_BLOCK, _BLOCK_GROUP, _BLOCK, _DISCARD_PADDING = (
    0x1F43B675, 0xE7, 0xA3, 0xA0, 0xA1, 0x75A2)

_UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"  # 8-byte size with all value bits set
_TRACK = 1
_AUDIO_TRACK = 2
_KEYFRAME = 0x80
_OPUS_SEEK_PRE_ROLL_NS = 80_000_000  # RFC 7845 recommends decoding 80 ms before a seek point
_MAX_BLOCK_OFFSET_MS = 32_767  # a block's time relative to its Cluster is an int16


def _id(element_id: int) -> bytes:
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big")


def _size(n: int) -> bytes:
    """EBML variable-length size: length marker bit, then the value; all-ones is reserved."""
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return (n | (1 << (7 * length))).to_bytes(length, "big")
    raise ValueError(f"EBML element too large: {n} bytes")


def _element(element_id: int, payload: bytes) -> bytes:
    return _id(element_id) + _size(len(payload)) + payload


def _uint(element_id: int, value: int) -> bytes:
    return _element(element_id, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _sint(element_id: int, value: int) -> bytes:
    return _element(element_id, value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big", signed=True))


def _block_payload(offset_ms: int, flags: int, data: bytes) -> bytes:
    return bytes([0x80 | _TRACK]) + struct.pack(">hB", offset_ms, flags) + data


class WebmOpusWriter:
    """Header once, then one Cluster per `packets` call."""

    def __init__(self, opus_head: bytes, pre_skip_48k: int) -> None:
        self._opus_head = opus_head
        self._pre_skip_48k = pre_skip_48k

    def header(self) -> bytes:
        ebml = _element(_EBML, b"".join([
            _uint(_EBML_VERSION, 1), _uint(_EBML_READ_VERSION, 1), _uint(_EBML_MAX_ID_LENGTH, 4),
            _uint(_EBML_MAX_SIZE_LENGTH, 8), _element(_DOC_TYPE, b"webm"),
            _uint(_DOC_TYPE_VERSION, 4), _uint(_DOC_TYPE_READ_VERSION, 2),
        ]))
        info = _element(_INFO, _uint(_TIMESTAMP_SCALE, 1_000_000)
                        + _element(_MUXING_APP, b"nutq") + _element(_WRITING_APP, b"nutq"))
        track = _element(_TRACK_ENTRY, b"".join([
            _uint(_TRACK_NUMBER, _TRACK), _uint(_TRACK_UID, 1), _uint(_TRACK_TYPE, _AUDIO_TRACK),
            _element(_CODEC_ID, b"A_OPUS"), _element(_CODEC_PRIVATE, self._opus_head),
            _uint(_CODEC_DELAY, self._pre_skip_48k * 1_000_000_000 // 48_000),
            _uint(_SEEK_PRE_ROLL, _OPUS_SEEK_PRE_ROLL_NS),
            # Opus always decodes at 48 kHz, whatever rate it was coded at.
            _element(_AUDIO, _element(_SAMPLING_FREQUENCY, struct.pack(">d", 48_000.0)) + _uint(_CHANNELS, 1)),
        ]))
        return ebml + _id(_SEGMENT) + _UNKNOWN_SIZE + info + _element(_TRACKS, track)

    def packets(self, packets: list[tuple[bytes, int, int]]) -> bytes:
        """Clusters for `(data, start_ns, discard_padding_ns)` triples (start counted from the first
        decoded sample); a new Cluster starts whenever a block would be too far from its Cluster's time."""
        out: list[bytes] = []
        blocks: list[bytes] = []
        cluster_ms = 0
        for data, start_ns, discard_ns in packets:
            ms = start_ns // 1_000_000
            if blocks and ms - cluster_ms > _MAX_BLOCK_OFFSET_MS:
                out.append(self._cluster(cluster_ms, blocks))
                blocks = []
            if not blocks:
                cluster_ms = ms
            if discard_ns:
                blocks.append(_element(_BLOCK_GROUP, _element(_BLOCK, _block_payload(ms - cluster_ms, 0, data))
                                       + _sint(_DISCARD_PADDING, discard_ns)))
            else:
                blocks.append(_element(_SIMPLE_BLOCK, _block_payload(ms - cluster_ms, _KEYFRAME, data)))
        if blocks:
            out.append(self._cluster(cluster_ms, blocks))
        return b"".join(out)

    @staticmethod
    def _cluster(cluster_ms: int, blocks: list[bytes]) -> bytes:
        return _element(_CLUSTER, _uint(_TIMESTAMP, cluster_ms) + b"".join(blocks))
