"""Ogg pages for an Opus stream (RFC 3533 framing, RFC 7845 Opus mapping), written as packets arrive.

Why our own writer: FFmpeg's Ogg muxer keeps the newest page back (it may have to mark it
end-of-stream later), so through it the last ~20 ms of every chunk would wait for the next chunk.
Here every call closes its pages at once, and the end-of-stream flag goes on the pages `finish`
writes — an empty page if the encoder has nothing left, which readers accept.

Granule positions count 48 kHz samples *including* the encoder's pre-skip (RFC 7845 §4), whatever
the coding rate; a final granule smaller than the decoded length tells the reader to trim the end.
"""

from __future__ import annotations

import struct
import zlib
from functools import cache

__all__ = ["OggPageWriter", "ogg_crc", "opus_tags"]

_CONTINUED, _BOS, _EOS = 0x01, 0x02, 0x04
_NO_GRANULE = -1  # "no packet ends on this page"
_MAX_SEGMENTS = 255


@cache
def _bit_reverse_table() -> bytes:
    return bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def ogg_crc(data: bytes) -> int:
    """Ogg's CRC-32: polynomial 0x04C11DB7, MSB first, initial value 0, no final XOR.

    zlib's CRC-32 is the same polynomial processed LSB first (bit-reflected) with inverted initial
    value and output. Reflecting every input byte, undoing zlib's inversions and reflecting the
    32-bit result turns one into the other, at C speed instead of a Python loop per byte.
    """
    reflected = zlib.crc32(data.translate(_bit_reverse_table()), 0xFFFF_FFFF) ^ 0xFFFF_FFFF
    return int(f"{reflected:032b}"[::-1], 2)


def opus_tags(vendor: str = "nutq") -> bytes:
    """The OpusTags header packet (RFC 7845 §5.2): vendor string and no user comments."""
    v = vendor.encode()
    return b"OpusTags" + struct.pack("<I", len(v)) + v + struct.pack("<I", 0)


class OggPageWriter:
    """Packs packets of one logical stream into Ogg pages; each call returns complete pages."""

    def __init__(self, serial: int) -> None:
        self._serial = serial & 0xFFFF_FFFF
        self._sequence = 0
        self._last_granule = 0
        self._begun = False

    def headers(self, opus_head: bytes, opus_tags_packet: bytes) -> bytes:
        """The two header pages: ID header alone on the first page (beginning of stream), tags after."""
        if self._begun:
            raise RuntimeError("Ogg headers were already written")
        self._begun = True
        return self._pages([(opus_head, 0)], first_flags=_BOS) + self._pages([(opus_tags_packet, 0)])

    def packets(self, packets: list[tuple[bytes, int]], *, end: bool = False) -> bytes:
        """Pages carrying `(data, granule_after_packet)` pairs; `end` marks the last page end-of-stream."""
        if not self._begun:
            raise RuntimeError("write the Ogg headers first")
        if not packets:
            # An empty page is the only way to flag end-of-stream after pages already sent.
            return self._page(b"", [], self._last_granule, _EOS) if end else b""
        return self._pages(packets, last_flags=_EOS if end else 0)

    def _pages(self, packets: list[tuple[bytes, int]], *, first_flags: int = 0, last_flags: int = 0) -> bytes:
        # Lacing: a packet of n bytes takes n // 255 segments of 255 and one final segment of
        # n % 255 (0 when n is a multiple of 255), so a reader can find where it ends.
        out: list[bytes] = []
        body: list[bytes] = []
        lacing: list[int] = []
        granule = _NO_GRANULE
        flags = first_flags
        for data, packet_granule in packets:
            sizes = [255] * (len(data) // 255) + [len(data) % 255]
            pos = 0
            for i, size in enumerate(sizes):
                if len(lacing) == _MAX_SEGMENTS:
                    out.append(self._page(b"".join(body), lacing, granule, flags))
                    body, lacing, granule = [], [], _NO_GRANULE
                    flags = _CONTINUED if i > 0 else 0
                lacing.append(size)
                body.append(data[pos:pos + size])
                pos += size
            granule = packet_granule
        out.append(self._page(b"".join(body), lacing, granule, flags | last_flags))
        return b"".join(out)

    def _page(self, body: bytes, lacing: list[int], granule: int, flags: int) -> bytes:
        if granule != _NO_GRANULE:
            self._last_granule = granule
        header = (b"OggS" + struct.pack("<BBqII", 0, flags, granule, self._serial, self._sequence)
                  + b"\0\0\0\0" + bytes([len(lacing)]) + bytes(lacing))
        self._sequence += 1
        page = bytearray(header + body)
        page[22:26] = struct.pack("<I", ogg_crc(bytes(page)))
        return bytes(page)
