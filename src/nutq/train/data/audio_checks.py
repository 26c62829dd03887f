"""Decoding a clip for the data tools, and the signal measures validation judges it by.

Decoding is libsndfile's (soundfile: WAV, FLAC, Ogg Vorbis/Opus and, since libsndfile 1.1, MP3),
with PyAV (FFmpeg, the `serve` extra) as a fallback for containers libsndfile lacks (m4a, webm).
Truncation is detected, not guessed from a short duration: a WAV whose `data` chunk claims more
bytes than the file holds, or a file whose header announces more frames than decode.

The measures are frame-energy based (25 ms frames, 10 ms hop), cheap enough to run on every clip:

- silence: a frame is silent below `max(-55 dBFS, loudest frame - 35 dB)`; leading/trailing
  silence are the silent runs at the ends, the silence ratio the share of silent frames;
- SNR: an energy-based estimate, 10*log10((speech power - noise power) / noise power), with the
  noise power the mean of the quietest 10% of frames and the speech power the mean of the
  loudest half. Pauses in speech carry the background noise, so this tracks the real SNR for
  read speech; digital silence (synthetic speech) gives the 100 dB cap. WADA-SNR would need a
  fitted lookup table nutq does not ship; for the > 20 dB standard, this estimate is enough;
- clipping: the share of samples at or above 0.999 of full scale.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Decoded", "DecodeError", "decode", "measure", "Measures", "SNR_CAP_DB"]

FRAME_S, HOP_S = 0.025, 0.010
SILENCE_FLOOR_DB = -55.0
SILENCE_BELOW_PEAK_DB = 35.0
CLIP_LEVEL = 0.999
SNR_CAP_DB = 100.0


class DecodeError(Exception):
    """The file cannot be decoded (`kind` is "missing", "decode" or "truncated")."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Decoded:
    wav: np.ndarray  # (N,) float32 mono (channels averaged)
    sr: int
    channels: int
    pcm_sha256: str  # of the 16-bit PCM of the mono mix and the rate: equal audio in any container


def _wav_truncated(path: Path) -> str | None:
    """Why a RIFF/WAVE file is cut short, or None (not a WAV, or complete)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            cid, clen = struct.unpack("<4sI", f.read(8))
            if cid == b"data":
                have = size - pos - 8
                # 0 and 0xFFFFFFFF are "unknown length" markers of streaming writers
                if clen not in (0, 0xFFFFFFFF) and have < clen:
                    return f"WAV data chunk declares {clen} bytes, the file holds {have}"
                return None
            pos += 8 + clen + (clen & 1)
    return None


def _decode_av(path: Path) -> tuple[np.ndarray, int]:
    import av  # the serve extra; ImportError is handled by the caller

    with av.open(str(path)) as box:
        stream = box.streams.audio[0]
        to_float = av.AudioResampler(format="fltp")  # planar float: (channels, samples) per frame
        chunks = [f.to_ndarray() for frame in box.decode(stream) for f in to_float.resample(frame)]
        if not chunks:
            raise DecodeError("decode", "no audio frames")
        return np.concatenate(chunks, axis=1).astype(np.float32), int(stream.rate)


def decode(path: str | Path) -> Decoded:
    """Decode any clip to mono float32; DecodeError with the reason otherwise (never another exception
    for a bad file)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise DecodeError("missing", f"file not found: {path}")
    try:
        why = _wav_truncated(path)
    except OSError as e:
        raise DecodeError("decode", f"cannot read: {e}") from e
    if why:
        raise DecodeError("truncated", why)
    try:
        info = sf.info(str(path))
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
        wav = wav.T
        if info.frames > 0 and wav.shape[1] < 0.99 * info.frames:
            raise DecodeError("truncated", f"header announces {info.frames} frames, {wav.shape[1]} decode")
    except DecodeError:
        raise
    except Exception as sf_error:  # noqa: BLE001 - libsndfile raises several types for bad input
        try:
            wav, sr = _decode_av(path)
        except ImportError:
            raise DecodeError("decode", f"libsndfile cannot decode it ({sf_error}); PyAV (pip install av) "
                                        "would try FFmpeg") from None
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - FFmpeg errors: the file is bad either way
            msg = str(sf_error) if "lost sync" in str(sf_error) else f"{sf_error}; FFmpeg: {e}"
            kind = "truncated" if "lost sync" in str(sf_error) else "decode"
            raise DecodeError(kind, msg) from None
    if wav.size == 0:
        raise DecodeError("decode", "no audio samples")
    if not np.isfinite(wav).all():
        raise DecodeError("decode", "NaN or infinite samples")
    mono = wav.mean(axis=0).astype(np.float32) if wav.shape[0] > 1 else wav[0].astype(np.float32)
    pcm = np.clip(np.round(mono * 32767.0), -32768, 32767).astype("<i2")
    digest = hashlib.sha256(str(int(sr)).encode() + b"\0" + pcm.tobytes()).hexdigest()
    return Decoded(mono, int(sr), int(wav.shape[0]), digest)


@dataclass(frozen=True)
class Measures:
    seconds: float
    peak: float  # max |sample|
    clip_ratio: float
    lead_silence_s: float
    trail_silence_s: float
    silence_ratio: float
    snr_db: float
    silent: bool  # nothing above the absolute silence floor


def _frame_db(wav: np.ndarray, sr: int) -> np.ndarray:
    n, hop = max(1, int(FRAME_S * sr)), max(1, int(HOP_S * sr))
    if len(wav) < n:
        frames = wav[None, :]
    else:
        idx = np.arange(0, len(wav) - n + 1, hop)[:, None] + np.arange(n)[None, :]
        frames = wav[idx]
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)
    return 10 * np.log10(np.maximum(power, 1e-12))


def measure(wav: np.ndarray, sr: int) -> Measures:
    db = _frame_db(wav, sr)
    peak_db = float(db.max())
    silent_frames = db < max(SILENCE_FLOOR_DB, peak_db - SILENCE_BELOW_PEAK_DB)
    voiced = np.flatnonzero(~silent_frames)
    seconds = len(wav) / sr
    if voiced.size == 0 or peak_db < SILENCE_FLOOR_DB:
        lead = trail = seconds
    else:
        lead = voiced[0] * HOP_S
        trail = max(0.0, seconds - (voiced[-1] * HOP_S + FRAME_S))
    power = np.sort(10 ** (db / 10))
    noise = power[: max(1, len(power) // 10)].mean()
    speech = power[len(power) // 2:].mean()
    if noise <= 1e-12 or speech <= noise:
        snr = SNR_CAP_DB if noise <= 1e-12 and speech > 1e-12 else 0.0
    else:
        snr = min(SNR_CAP_DB, 10 * np.log10((speech - noise) / noise))
    return Measures(seconds=seconds, peak=float(np.abs(wav).max()), clip_ratio=float(np.mean(np.abs(wav) >= CLIP_LEVEL)),
                    lead_silence_s=float(lead), trail_silence_s=float(trail),
                    silence_ratio=float(silent_frames.mean()), snr_db=float(snr), silent=peak_db < SILENCE_FLOOR_DB)
