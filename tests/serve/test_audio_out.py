"""Per-connection audio encoders: formats, bit-exactness, streaming equivalence, codec round trips.

The engine hands encoders float32 mono chunks at 24 kHz. Every test feeds a short tone in uneven
chunks and checks what a client would get: the same bytes as one-shot encoding for the sample
formats, decodable streams of the right length and rate for the codecs, and bytes on the wire
before the stream ends.
"""

from __future__ import annotations

import io
import struct
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf
import soxr

from nutq.serve import g711
from nutq.serve.audio_out import Encoder, make_encoder, to_int16
from nutq.serve.formats import SAMPLE_RATES, OutputFormat, UnsupportedFormat, parse_format, supported_names
from nutq.serve.ogg import ogg_crc

SR = 24_000
TONE_HZ = 300.0


def tone(seconds: float = 0.6, amp: float = 0.5, hz: float = TONE_HZ) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def encode_in_chunks(enc: Encoder, x: np.ndarray, bounds) -> list[bytes]:
    """One entry per encode() call (the pieces between `bounds`), then the finish() bytes."""
    return [enc.encode(part) for part in np.split(x, bounds)] + [enc.finish()]


def uneven_bounds(n: int, seed: int = 0, cuts: int = 7) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(np.arange(1, n), cuts, replace=False))


# ---------------------------------------------------------------- G.711


def _audioop():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pytest.importorskip("audioop", reason="audioop (the G.711 reference) left Python in 3.13")


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_encoding_is_bit_exact_with_the_standard_tables_for_every_int16(law):
    audioop = _audioop()
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    ours = (g711.ulaw_encode if law == "ulaw" else g711.alaw_encode)(pcm)
    ref = np.frombuffer((audioop.lin2ulaw if law == "ulaw" else audioop.lin2alaw)(pcm.tobytes(), 2), np.uint8)
    bad = np.flatnonzero(ours != ref)
    assert bad.size == 0, f"{bad.size} inputs differ, first {pcm[bad[:5]]}: ours {ours[bad[:5]]} ref {ref[bad[:5]]}"


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_decoding_matches_the_standard_tables_for_every_code(law):
    audioop = _audioop()
    codes = bytes(range(256))
    ours = (g711.ulaw_decode if law == "ulaw" else g711.alaw_decode)(codes)
    ref = np.frombuffer((audioop.ulaw2lin if law == "ulaw" else audioop.alaw2lin)(codes, 2), np.int16)
    np.testing.assert_array_equal(ours, ref)


def test_g711_codes_survive_decode_then_encode():
    codes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(g711.alaw_encode(g711.alaw_decode(codes)), codes)
    back = g711.ulaw_encode(g711.ulaw_decode(codes))
    # mu-law has two zeros: 0x7F ("-0") decodes to 0, which encodes as 0xFF ("+0").
    np.testing.assert_array_equal(np.flatnonzero(back != codes), [0x7F])
    assert back[0x7F] == 0xFF


@pytest.mark.parametrize("amp", [0.1, 0.9])
def test_g711_round_trip_keeps_the_textbook_38_db_snr(amp):
    x = to_int16(tone(amp=amp)).astype(np.float64)
    for enc, dec in [(g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)]:
        err = dec(enc(x.astype(np.int16))) - x
        snr = 10 * np.log10(np.mean(x ** 2) / np.mean(err ** 2))
        assert snr > 35, f"{enc.__name__} at amplitude {amp}: SNR {snr:.1f} dB (G.711 gives ~38 dB)"


def test_g711_rejects_non_int16_input():
    with pytest.raises(TypeError, match="int16"):
        g711.ulaw_encode(np.zeros(4, np.float32))


# ---------------------------------------------------------------- format names


@pytest.mark.parametrize("protocol,name,rate,expected", [
    ("openai", "pcm", None, ("pcm_s16le", "raw", 24000)),
    ("openai", "wav", None, ("pcm_s16le", "wav", 24000)),
    ("openai", "mp3", None, ("mp3", "mp3", 24000)),
    ("openai", "opus", None, ("opus", "ogg", 24000)),
    ("openai", "flac", 44100, ("flac", "flac", 44100)),
    ("openai", "aac", None, ("aac", "adts", 24000)),
    ("deepgram", "linear16", 16000, ("pcm_s16le", "raw", 16000)),
    ("deepgram", "mulaw", None, ("mulaw", "raw", 8000)),
    ("deepgram", "alaw", "8000", ("alaw", "raw", 8000)),
    ("native", "pcm_f32le", None, ("pcm_f32le", "raw", 24000)),
    ("native", "webm-opus", 48000, ("opus", "webm", 48000)),
    ("native", "MuLaw", None, ("mulaw", "raw", 8000)),
    ("native", "wav_f32", 22050, ("pcm_f32le", "wav", 22050)),
])
def test_protocol_names_map_to_formats(protocol, name, rate, expected):
    fmt = parse_format(name, rate, protocol=protocol)
    assert (fmt.codec, fmt.container, fmt.sample_rate, fmt.channels) == (*expected, 1)


def test_deepgram_container_parameter():
    assert parse_format("linear16", protocol="deepgram", container="wav").container == "wav"
    assert parse_format("mulaw", protocol="deepgram", container="wav").container == "wav"
    assert parse_format("linear16", protocol="deepgram", container="none").container == "raw"
    assert parse_format("opus", protocol="deepgram", container="ogg").container == "ogg"
    # Deepgram says container=none for mp3 too: that is the MP3 stream itself.
    assert parse_format("mp3", protocol="deepgram", container="none").container == "mp3"
    with pytest.raises(UnsupportedFormat, match="cannot go in container"):
        parse_format("mp3", protocol="deepgram", container="wav")
    with pytest.raises(UnsupportedFormat, match="only a Deepgram parameter"):
        parse_format("wav", protocol="openai", container="wav")


@pytest.mark.parametrize("call,message", [
    (lambda: parse_format("ogg_vorbis"), "supported: pcm_s16le, pcm_f32le, wav"),
    (lambda: parse_format("linear16", protocol="openai"), "supported: pcm, wav, mp3"),
    (lambda: parse_format("wav", 11025), "supported: 8000, 16000, 22050, 24000, 32000, 44100, 48000"),
    (lambda: parse_format("wav", "fast"), "must be an integer"),
    (lambda: parse_format("opus", 44100), "supported: 8000, 16000, 24000, 48000"),
    (lambda: parse_format("mp3", bit_rate=1_000_000), r"bit_rate for mp3 must be in \[8000, 320000\]"),
    (lambda: parse_format("wav", bit_rate=64000), "no adjustable bit rate"),
    (lambda: parse_format("linear16", protocol="deepgram", container="mkv"), "supported: none, wav, ogg"),
    (lambda: OutputFormat("pcm_s16le", "raw", 24000, channels=2), "only mono"),
    (lambda: OutputFormat("vorbis", "ogg", 24000), "unknown codec"),
])
def test_unsupported_formats_are_refused_with_the_supported_choices(call, message):
    with pytest.raises(UnsupportedFormat, match=message):
        call()


def test_unknown_protocol_is_a_programming_error():
    with pytest.raises(ValueError, match="one of native, openai, deepgram"):
        parse_format("wav", protocol="elevenlabs")


def test_every_native_name_parses_at_its_default_rate_and_has_a_content_type():
    for name in supported_names("native"):
        fmt = parse_format(name)
        assert fmt.content_type.startswith("audio/"), name


@pytest.mark.parametrize("name,rate,content_type", [
    ("pcm_s16le", 16000, "audio/pcm;rate=16000"),
    ("pcm_f32le", 24000, "audio/pcm;rate=24000;encoding=float"),
    ("wav", 24000, "audio/wav"),
    ("mulaw", 8000, "audio/basic"),
    ("mulaw", 16000, "audio/PCMU;rate=16000"),
    ("alaw", 8000, "audio/PCMA;rate=8000"),
    ("mp3", 24000, "audio/mpeg"),
    ("opus", 24000, "audio/ogg;codecs=opus"),
    ("webm_opus", 24000, "audio/webm;codecs=opus"),
    ("flac", 24000, "audio/flac"),
    ("aac", 24000, "audio/aac"),
])
def test_content_types(name, rate, content_type):
    assert parse_format(name, rate).content_type == content_type


# ---------------------------------------------------------------- PCM, WAV, G.711 streams


@pytest.mark.parametrize("name", ["pcm_s16le", "pcm_f32le", "mulaw", "alaw", "wav"])
@pytest.mark.parametrize("rate", SAMPLE_RATES)
def test_chunked_output_equals_one_shot_encoding_of_the_one_shot_resampled_signal(name, rate):
    x = tone(0.5) + 0.05 * np.random.default_rng(1).standard_normal(int(0.5 * SR)).astype(np.float32)
    streamed = b"".join(encode_in_chunks(make_encoder(parse_format(name, rate)), x, uneven_bounds(len(x))))

    y = np.clip(soxr.resample(x, SR, rate, quality="HQ"), -1, 1) if rate != SR else x
    pcm = to_int16(y)
    expected = {
        "pcm_s16le": pcm.astype("<i2").tobytes(),
        "wav": pcm.astype("<i2").tobytes(),
        "pcm_f32le": y.astype("<f4").tobytes(),
        "mulaw": g711.ulaw_encode(pcm).tobytes(),
        "alaw": g711.alaw_encode(pcm).tobytes(),
    }[name]
    body = streamed[44:] if name == "wav" else streamed
    assert len(body) == len(expected), f"{len(body)} vs {len(expected)} bytes"
    assert body == expected


def test_pcm_float_at_24khz_is_the_input_itself():
    x = tone()
    enc = make_encoder(parse_format("pcm_f32le"))
    data = b"".join(encode_in_chunks(enc, x, uneven_bounds(len(x))))
    np.testing.assert_array_equal(np.frombuffer(data, "<f4"), x)


def test_samples_beyond_full_scale_are_clipped_not_wrapped():
    x = np.array([1.5, -1.5, 1.0, -1.0, 0.999, 2e9], np.float32)
    s16 = np.frombuffer(make_encoder(parse_format("pcm_s16le")).encode(x), "<i2")
    np.testing.assert_array_equal(s16, [32767, -32767, 32767, -32767, 32734, 32767])
    f32 = np.frombuffer(make_encoder(parse_format("pcm_f32le")).encode(x), "<f4")
    np.testing.assert_array_equal(f32, np.clip(x, -1, 1))
    codes = np.frombuffer(make_encoder(parse_format("mulaw", SR)).encode(np.array([1.5, -1.5], np.float32)), np.uint8)
    np.testing.assert_array_equal(codes, g711.ulaw_encode(np.array([32767, -32767], np.int16)))


def test_streaming_wav_header_declares_unknown_length_and_the_right_format():
    enc = make_encoder(parse_format("wav", 16000))
    first = enc.encode(tone(0.1))
    riff, riff_size, wave = struct.unpack_from("<4sI4s", first)
    assert (riff, wave, riff_size) == (b"RIFF", b"WAVE", 0xFFFFFFFF)
    tag, channels, rate, byte_rate, align, bits = struct.unpack_from("<HHIIHH", first, 20)
    assert (tag, channels, rate, byte_rate, align, bits) == (1, 1, 16000, 32000, 2, 16)
    assert first[36:40] == b"data" and struct.unpack_from("<I", first, 40)[0] == 0xFFFFFFFF


@pytest.mark.parametrize("codec,dtype", [("pcm_s16le", "int16"), ("pcm_f32le", "float32"),
                                          ("mulaw", "int16"), ("alaw", "int16")])
def test_streamed_wav_reads_back_with_soundfile(codec, dtype):
    x = tone(0.4)
    enc = make_encoder(OutputFormat(codec, "wav", 16000))
    data = b"".join(encode_in_chunks(enc, x, uneven_bounds(len(x))))
    got, rate = sf.read(io.BytesIO(data), dtype=dtype)
    pcm = to_int16(np.clip(soxr.resample(x, SR, 16000, quality="HQ"), -1, 1))
    expected = {
        "pcm_s16le": pcm,
        "pcm_f32le": np.clip(soxr.resample(x, SR, 16000, quality="HQ"), -1, 1),
        "mulaw": g711.ulaw_decode(g711.ulaw_encode(pcm)),
        "alaw": g711.alaw_decode(g711.alaw_encode(pcm)),
    }[codec]
    assert rate == 16000
    np.testing.assert_array_equal(got, expected)


def test_finish_without_audio_gives_a_valid_empty_stream():
    assert make_encoder(parse_format("pcm_s16le")).finish() == b""
    got, rate = sf.read(io.BytesIO(make_encoder(parse_format("wav")).finish()), dtype="int16")
    assert (len(got), rate) == (0, SR)


@pytest.mark.parametrize("name", ["mp3", "opus", "flac", "aac", "mulaw", "pcm_f32le"])
def test_every_format_finishes_a_stream_that_had_no_audio(name):
    """A request whose tokens were all non-speech ids yields only empty chunks: the encoder must
    still end cleanly (LAME, for one, refuses to flush an encoder that never saw a sample)."""
    enc = make_encoder(parse_format(name))
    assert enc.encode(np.zeros(0, np.float32)) is not None
    assert isinstance(enc.finish(), bytes) and enc.finished


# ---------------------------------------------------------------- encoder lifecycle and input checks


def test_finish_is_idempotent_and_encode_after_finish_is_an_error():
    enc = make_encoder(parse_format("wav", 8000))
    assert enc.encode(tone(0.1))
    assert enc.finish()  # the resampler's tail
    assert enc.finished
    assert enc.finish() == b""
    with pytest.raises(RuntimeError, match="after finish"):
        enc.encode(tone(0.1))


@pytest.mark.parametrize("chunk,error,message", [
    ([0.0, 0.1], TypeError, "numpy array"),
    (np.zeros((2, 10), np.float32), ValueError, r"shape \(N,\)"),
    (np.zeros(10, np.int16), TypeError, "float samples"),
    (np.array([0.0, np.nan], np.float32), ValueError, "NaN"),
])
def test_bad_chunks_are_refused(chunk, error, message):
    with pytest.raises(error, match=message):
        make_encoder(parse_format("pcm_s16le")).encode(chunk)


def test_float64_and_empty_chunks_are_accepted():
    enc = make_encoder(parse_format("pcm_s16le"))
    assert enc.encode(np.zeros(0, np.float32)) == b""
    assert enc.encode(np.array([0.5], np.float64)) == to_int16(np.array([0.5])).tobytes()


def test_make_encoder_takes_an_output_format():
    with pytest.raises(TypeError, match="OutputFormat"):
        make_encoder("wav")


@pytest.mark.parametrize("name,module", [("mp3", "lameenc"), ("opus", "av"), ("flac", "av"), ("aac", "av")])
def test_a_missing_codec_package_names_the_extra_to_install(monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(UnsupportedFormat, match=r"nutq\[serve\]"):
        make_encoder(parse_format(name))


# ---------------------------------------------------------------- compressed codecs (serve extra)


def _decode(data: bytes) -> tuple[np.ndarray, int, str]:
    """(samples as float, sample rate, container name) through FFmpeg's demuxers and decoders."""
    av = pytest.importorskip("av")
    with av.open(io.BytesIO(data)) as container:
        frames = [f for f in container.decode(audio=0)]
        name = container.format.name
    samples = np.concatenate([f.to_ndarray().reshape(-1).astype(np.float64) for f in frames])
    if frames[0].format.name == "s16":
        samples /= 32768.0
    return samples, frames[0].sample_rate, name


def _dominant_hz(y: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return np.fft.rfftfreq(len(y), 1 / rate)[int(np.argmax(spectrum))]


def _needs(name: str) -> None:
    pytest.importorskip("lameenc" if name == "mp3" else "av")


# name, rate -> container format FFmpeg should detect, magic bytes at the start, decoded rate.
CODEC_CASES = [
    ("mp3", 24000, "mp3", b"\xff", 24000),
    ("mp3", 8000, "mp3", b"\xff", 8000),
    ("mp3", 44100, "mp3", b"\xff", 44100),
    ("opus", 24000, "ogg", b"OggS", 48000),
    ("opus", 8000, "ogg", b"OggS", 48000),
    ("webm_opus", 24000, "matroska,webm", b"\x1a\x45\xdf\xa3", 48000),
    ("webm_opus", 16000, "matroska,webm", b"\x1a\x45\xdf\xa3", 48000),
    ("flac", 24000, "flac", b"fLaC", 24000),
    ("flac", 22050, "flac", b"fLaC", 22050),
    ("aac", 24000, "aac", b"\xff", 24000),
    ("aac", 48000, "aac", b"\xff", 48000),
]


@pytest.mark.parametrize("name,rate,container,magic,decoded_rate", CODEC_CASES)
def test_codec_streams_decode_to_the_tone_at_the_right_rate_and_length(name, rate, container, magic, decoded_rate):
    _needs(name)
    x = tone(0.6)
    chunk = int(0.2 * SR)  # the engine's first chunks are a few hundred ms
    parts = encode_in_chunks(make_encoder(parse_format(name, rate)), x, np.arange(chunk, len(x), chunk))
    data = b"".join(parts)
    assert data.startswith(magic)

    y, got_rate, got_container = _decode(data)
    assert (got_container, got_rate) == (container, decoded_rate)
    n = round(len(x) * decoded_rate / SR)
    if name in ("opus", "webm_opus", "flac"):
        # Ogg granules / WebM CodecDelay + DiscardPadding / FLAC frames give the exact length.
        assert len(y) == n, f"decoded {len(y)} samples, encoded {n}"
    else:
        # MP3 (LAME delay + padding) and ADTS AAC (1024 priming samples) cannot signal trimming:
        # the decoded stream is longer by the codec's delay, at most three frames.
        frame = 1024 if name == "aac" else (1152 if rate >= 32000 else 576)
        assert n <= len(y) <= n + 3 * frame, f"decoded {len(y)} samples, encoded {n}"
    assert abs(_dominant_hz(y, got_rate) - TONE_HZ) < 5, "the decoded audio is not the 300 Hz tone"
    middle = y[len(y) // 4: 3 * len(y) // 4]  # away from codec start-up transients
    rms = float(np.sqrt(np.mean(middle ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.1), f"tone level changed: RMS {rms:.3f}"


@pytest.mark.parametrize("name,rate", [(c[0], c[1]) for c in CODEC_CASES if c[0] != "flac"])
def test_codec_bytes_leave_before_finish(name, rate):
    """Headers come with the first call (even an empty chunk); decodable audio by the second
    0.2 s chunk at the latest (a codec may first need a whole frame plus its look-ahead)."""
    _needs(name)
    enc = make_encoder(parse_format(name, rate))
    headers = enc.encode(np.zeros(0, np.float32))
    x = tone(0.4)
    sent = headers + enc.encode(x[: len(x) // 2]) + enc.encode(x[len(x) // 2:])
    y, _, _ = _decode(sent)
    assert len(y) > 0, "no decodable audio before finish()"


def test_flac_is_lossless_against_the_16_bit_signal():
    pytest.importorskip("av")
    x = tone(0.7) + 0.1 * np.random.default_rng(2).standard_normal(int(0.7 * SR)).astype(np.float32)
    data = b"".join(encode_in_chunks(make_encoder(parse_format("flac")), x, uneven_bounds(len(x))))
    y, _, _ = _decode(data)
    np.testing.assert_array_equal(np.rint(y * 32768).astype(np.int16), to_int16(np.clip(x, -1, 1)))


@pytest.mark.parametrize("name", ["opus", "webm_opus"])
def test_opus_containers_hold_no_packet_back(name):
    """After each call, everything coded so far decodes: the muxing lags by nothing, only the
    encoder's 6.5 ms look-ahead is missing (0.2 s chunks are whole 20 ms frames)."""
    pytest.importorskip("av")
    enc = make_encoder(parse_format(name))
    x = tone(0.6)
    sent = b""
    for k, part in enumerate(np.split(x, 3), start=1):
        sent += enc.encode(part)
        y, rate, _ = _decode(sent)
        lookahead = 312  # OpusHead pre-skip at 48 kHz, what libopus reports
        assert len(y) == k * 9600 - lookahead, f"after chunk {k}: {len(y)} samples decodable"


def test_ogg_pages_are_well_formed():
    pytest.importorskip("av")
    x = tone(0.6)
    data = b"".join(encode_in_chunks(make_encoder(parse_format("opus")), x, uneven_bounds(len(x))))
    pages = _ogg_pages(data)
    assert [p["seq"] for p in pages] == list(range(len(pages)))
    assert [p["flags"] & 2 for p in pages] == [2] + [0] * (len(pages) - 1), "BOS on the first page only"
    assert [p["flags"] & 4 for p in pages] == [0] * (len(pages) - 1) + [4], "EOS on the last page only"
    assert len({p["serial"] for p in pages}) == 1
    assert pages[0]["body"].startswith(b"OpusHead") and pages[1]["body"].startswith(b"OpusTags")
    pre_skip = struct.unpack_from("<H", pages[0]["body"], 10)[0]
    granules = [p["granule"] for p in pages[2:]]
    assert granules == sorted(granules)
    assert granules[-1] == pre_skip + 2 * len(x), "final granule must trim to the encoded length (48 kHz)"
    for p in pages:
        assert p["crc"] == _crc_bitwise(p["zeroed"])


def test_ogg_crc_agrees_with_ffmpeg_and_with_the_bitwise_definition():
    av = pytest.importorskip("av")
    buf = io.BytesIO()
    with av.open(buf, "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=SR, layout="mono")
        frame = av.AudioFrame.from_ndarray(tone(0.2)[None, :], format="flt", layout="mono")
        frame.sample_rate = SR
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    pages = _ogg_pages(buf.getvalue())
    assert len(pages) >= 3
    for p in pages:
        assert ogg_crc(p["zeroed"]) == p["crc"]
    assert ogg_crc(b"") == _crc_bitwise(b"") == 0
    blob = bytes(range(256)) * 3
    assert ogg_crc(blob) == _crc_bitwise(blob)


def test_pyav_wheel_has_the_encoders_we_use():
    av = pytest.importorskip("av")
    for name in ("libopus", "flac", "aac"):
        assert av.codec.Codec(name, "w").is_encoder, name


def test_bit_rate_reaches_the_encoder():
    pytest.importorskip("av")
    pytest.importorskip("lameenc")
    x = tone(1.0)
    for name in ("mp3", "opus", "aac"):
        small = b"".join(encode_in_chunks(make_encoder(parse_format(name, bit_rate=32_000)), x, []))
        large = b"".join(encode_in_chunks(make_encoder(parse_format(name, bit_rate=128_000)), x, []))
        assert len(large) > 1.5 * len(small), f"{name}: {len(small)} vs {len(large)} bytes"


def _ogg_pages(data: bytes) -> list[dict]:
    pages, pos = [], 0
    while pos < len(data):
        assert data[pos:pos + 4] == b"OggS", f"no page at byte {pos}"
        _, flags, granule, serial, seq, crc, nseg = struct.unpack_from("<BBqIIIB", data, pos + 4)
        lacing = data[pos + 27:pos + 27 + nseg]
        end = pos + 27 + nseg + sum(lacing)
        page = bytearray(data[pos:end])
        page[22:26] = b"\0\0\0\0"
        pages.append({"flags": flags, "granule": granule, "serial": serial, "seq": seq, "crc": crc,
                      "body": data[pos + 27 + nseg:end], "zeroed": bytes(page)})
        pos = end
    return pages


def _crc_bitwise(data: bytes) -> int:
    """Ogg's CRC from its definition (MSB-first, poly 0x04C11DB7, init 0), one bit at a time."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) & 0xFFFFFFFF if crc & 0x80000000 else (crc << 1) & 0xFFFFFFFF
    return crc

