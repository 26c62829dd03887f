"""Leading/trailing silence trimming, equal to `librosa.effects.trim` with its defaults.

The voice encoder trims its 16 kHz reference with `librosa.effects.trim(wav, top_db=20)`
(frame 2048, hop 512, ref = max). What that computes:

- RMS per frame on the zero-padded signal (`center=True`, constant padding of frame//2 each
  side), so frame i is centred on sample i·hop and there are 1 + len // hop frames;
- dB relative to the loudest frame: 10·log10(max(1e-10, rms²)) - 10·log10(max(1e-10, max(rms)²));
- a frame is voiced if its dB > -top_db; the kept span is [first·hop, min(len, (last+1)·hop)).
  The loudest frame is always at 0 dB, so something is always kept: an all-zero signal has
  every frame at 0 dB and is kept whole (as in librosa); an empty one gives (0, 0).

All arithmetic is float32 in the same order as librosa (square in float32, numpy's mean over the
2048 samples of a frame, float32 log10), so the boundaries are identical, not just close: a frame
that sits within float rounding of the threshold decides the same way.
"""

from __future__ import annotations

import numpy as np

__all__ = ["trim_silence", "trim_bounds"]


def trim_bounds(wav, top_db: float = 20.0, frame_length: int = 2048, hop_length: int = 512) -> tuple[int, int]:
    """(start, end) sample indices of the non-silent part of a 1-D signal (numpy or torch)."""
    y = _as_float32_numpy(wav)
    if y.ndim != 1:
        raise ValueError(f"trim expects a mono 1-D signal, got shape {tuple(y.shape)}")
    half = frame_length // 2
    padded = np.pad(y, (half, half), mode="constant")
    n_frames = 1 + (len(padded) - frame_length) // hop_length
    # (n_frames, frame_length) view; each row is one frame, contiguous like librosa's frames
    frames = np.lib.stride_tricks.as_strided(
        padded, shape=(n_frames, frame_length), strides=(hop_length * padded.strides[0], padded.strides[0]),
        writeable=False,
    )
    power = np.mean(np.square(frames, dtype=np.float32), axis=-1)  # mean square, float32
    rms = np.sqrt(power)
    # librosa.amplitude_to_db(rms, ref=np.max, top_db=None) squares the rms again and floors at
    # amin² = 1e-10; keep exactly that sequence so rounding matches.
    # Under numpy 1.x promotion (what chatterbox-tts pins) the per-frame term is float32 while the
    # reference term is computed in float64 from the float32 max², then rounded to float32.
    amin = 1e-10
    db = np.float32(10.0) * np.log10(np.maximum(np.float32(amin), np.square(rms)))
    ref_db = np.float32(10.0 * np.log10(max(amin, float(np.square(rms.max())))))
    db = db - ref_db
    voiced = np.flatnonzero(db > -top_db)
    if voiced.size == 0:
        return 0, 0
    start = int(voiced[0]) * hop_length
    end = min(len(y), (int(voiced[-1]) + 1) * hop_length)
    return start, end


def trim_silence(wav, top_db: float = 20.0, frame_length: int = 2048, hop_length: int = 512):
    """(trimmed, (start, end)): `wav[start:end]` (same type as the input) and the bounds."""
    start, end = trim_bounds(wav, top_db=top_db, frame_length=frame_length, hop_length=hop_length)
    return wav[start:end], (start, end)


def _as_float32_numpy(wav) -> np.ndarray:
    if hasattr(wav, "detach"):  # torch tensor, any device/dtype
        wav = wav.detach().to("cpu").float().numpy()
    return np.ascontiguousarray(wav, dtype=np.float32)
