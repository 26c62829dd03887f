"""`check_clip`: an uploaded reference clip checked against the server's limits with bounded work.

A compressed clip can decode to far more audio than its size suggests (a 343 KB FLAC of 8 channels
at 655,350 Hz decodes to gigabytes), so nothing is decoded in full before it is known to fit:

1. the header's channels, sample rate, length and decoded size are checked first;
2. then the clip is decoded in blocks of `_BLOCK_FRAMES`, keeping nothing but a count, and refused
   as soon as it passes the decoded-size cap or the longest duration (headers can lie; MP3 and Ogg
   headers only estimate the length).

Only a clip that passed both is decoded for real (by the voice preparation), so that decode is
bounded by `max_voice_samples`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from .config import ServeConfig
from .errors import ApiError

__all__ = ["check_clip", "ClipCheck"]

# soundfile's names for the containers accepted (WAVEX: WAV with the extensible header).
_FORMATS = {"WAV": "wav", "WAVEX": "wav", "FLAC": "flac", "MP3": "mp3", "OGG": "ogg"}
_BLOCK_FRAMES = 1 << 16  # frames decoded at a time: 0.5 MB of float32 for 2 channels
_HEADER_SLACK = 1.01  # a header's length may round; the decoded count is checked exactly


@dataclass(frozen=True)
class ClipCheck:
    format: str  # wav, flac, mp3 or ogg
    seconds: float
    sample_rate: int
    channels: int


def _invalid(message: str, code: str = "invalid_audio") -> ApiError:
    return ApiError(400, message, code=code, param="file")


def _bad_duration(seconds: float, config: ServeConfig) -> ApiError:
    return _invalid(f"clip is {seconds:.2f} s long; voices need {config.min_voice_s:g} to {config.max_voice_s:g} s "
                    "of speech", "invalid_audio_duration")


def _too_big(samples: int, config: ServeConfig) -> ApiError:
    return _invalid(f"clip decodes to {samples} samples or more; the limit is {config.max_voice_samples} (all "
                    "channels)", "audio_too_large")


def _check_header(info, config: ServeConfig) -> str:
    fmt = _FORMATS.get(info.format)
    if fmt is None:
        raise _invalid(f"clip format {info.format} is not accepted; send WAV, FLAC, MP3 or Ogg",
                       "unsupported_audio_format")
    if not 1 <= info.channels <= config.max_voice_channels:
        raise _invalid(f"clip has {info.channels} channels; at most {config.max_voice_channels} are accepted",
                       "unsupported_audio_channels")
    if not config.min_voice_sample_rate <= info.samplerate <= config.max_voice_sample_rate:
        raise _invalid(f"clip sample rate is {info.samplerate} Hz; accepted: {config.min_voice_sample_rate} to "
                       f"{config.max_voice_sample_rate} Hz", "unsupported_sample_rate")
    if info.frames > 0:
        if info.frames / info.samplerate > config.max_voice_s * _HEADER_SLACK:
            raise _bad_duration(info.frames / info.samplerate, config)
        if info.frames * info.channels > config.max_voice_samples * _HEADER_SLACK:
            raise _too_big(info.frames * info.channels, config)
    return fmt


def check_clip(clip: bytes, config: ServeConfig) -> ClipCheck:
    """Check `clip` against the upload limits; raises ApiError 400 saying why. CPU-bound (it
    decodes, in bounded blocks): call it from a worker thread."""
    import soundfile as sf

    if not clip:
        raise _invalid("the uploaded clip is empty")
    try:
        with sf.SoundFile(io.BytesIO(clip)) as f:
            fmt = _check_header(f, config)
            sr, channels = f.samplerate, f.channels
            frames_cap = min(config.max_voice_samples // channels, int(config.max_voice_s * sr) + 1)
            frames = 0
            for block in f.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True):
                frames += len(block)
                if frames > frames_cap:
                    if frames * channels > config.max_voice_samples:
                        raise _too_big(frames * channels, config)
                    raise _bad_duration(frames / sr, config)
    except ApiError:
        raise
    except Exception as e:  # noqa: BLE001 - libsndfile raises several types for unreadable input
        raise _invalid(f"cannot read the clip as audio ({e}); send WAV, FLAC, MP3 or Ogg") from None
    seconds = frames / sr
    if not config.min_voice_s <= seconds <= config.max_voice_s:
        raise _bad_duration(seconds, config)
    return ClipCheck(fmt, seconds, sr, channels)
