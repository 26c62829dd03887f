"""FLAC output is one complete file, sent by `finish()`, with an exact STREAMINFO: libsndfile
(`soundfile`) trusts its sample count, which a header sent before the audio could not know.
The served stream, read back with soundfile, PyAV and ffprobe: tests/serve/test_openai_api.py."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import soundfile as sf

from nutq.serve.audio_out import make_encoder, parse_format, to_int16

pytest.importorskip("av")

SR = 24_000


def signal(seconds: float, seed: int = 3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    noise = 0.05 * np.random.default_rng(seed).standard_normal(t.size)
    return (0.5 * np.sin(2 * np.pi * 300 * t) + noise).astype(np.float32)


def streaminfo_total_and_md5(data: bytes) -> tuple[int, bytes]:
    assert data[:4] == b"fLaC" and data[4] == 0x80 and int.from_bytes(data[5:8], "big") == 34
    info = data[8:42]
    return int.from_bytes(info[10:18], "big") & ((1 << 36) - 1), info[18:34]


def test_flac_is_one_complete_file_with_exact_streaminfo_sent_by_finish():
    x = signal(0.9)
    enc = make_encoder(parse_format("flac"))
    early = [enc.encode(c) for c in np.array_split(x, 7)]
    assert early == [b""] * 7, "a FLAC header sent before the end could not hold the length"
    data = enc.finish()
    pcm = to_int16(np.clip(x, -1, 1))
    total, md5 = streaminfo_total_and_md5(data)
    assert total == len(x)
    assert md5 == hashlib.md5(pcm.astype("<i2").tobytes()).digest(), "MD5 of the samples"
    got, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == SR and np.array_equal(got, pcm)


def test_flac_at_another_rate_counts_the_resampled_samples():
    enc = make_encoder(parse_format("flac", 16000))
    for c in np.array_split(signal(0.5), 3):
        enc.encode(c)
    data = enc.finish()
    got, rate = sf.read(io.BytesIO(data), dtype="int16")
    assert rate == 16000 and streaminfo_total_and_md5(data)[0] == len(got) > 0


def test_without_the_encoders_final_streaminfo_the_count_stays_and_no_wrong_md5(monkeypatch):
    from nutq.serve.av_codec import AvPacketEncoder

    monkeypatch.setattr(AvPacketEncoder, "final_extradata", property(lambda self: None))
    x = signal(0.3)
    enc = make_encoder(parse_format("flac"))
    enc.encode(x)
    data = enc.finish()
    total, md5 = streaminfo_total_and_md5(data)
    assert total == len(x)
    assert md5 == bytes(16), "an MD5 of 0 means 'not computed'; a stale one would fail verification"
    assert len(sf.read(io.BytesIO(data))[0]) == len(x)
