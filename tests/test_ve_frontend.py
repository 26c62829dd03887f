"""Voice-encoder front end: silence trim and 40-band power mel, against librosa via the official VE.

Golden data: tools/parity/voice_encoder.py (librosa 0.11 `effects.trim(top_db=20)` and the
official `melspectrogram`). Trim bounds are integers and must be identical, including on
signals bisected to sit on the float32 knife edge of the -20 dB threshold. The mel is float32 on
both sides with a float64 FFT; what remains is float32 rounding and summation order (~2e-7
relative), so the mel tolerance is 1e-5 relative to each clip's peak.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import load_golden
from nutq.audio.trim import trim_bounds, trim_silence
from nutq.audio.ve_mel import ve_mel

MEL_RTOL = 1e-5


@pytest.fixture(scope="module")
def golden():
    return load_golden("voice_encoder")


def test_trim_bounds_equal_librosa_on_clips(golden):
    t, meta = golden
    for clip in meta["clips"]:
        assert trim_bounds(t[f"in.wav.{clip}"].numpy()) == tuple(t[f"out.trim.{clip}"].tolist()), clip
    # the fixture must actually exercise trimming at both ends
    start, end = t["out.trim.voiced"].tolist()
    assert start > 0 and end < len(t["in.wav.voiced"])


def test_trim_bounds_equal_librosa_on_threshold_knife_edges(golden):
    t, meta = golden
    got = [trim_bounds(t[f"in.trimwav.{k}"].numpy()) for k in range(meta["n_trim_stress"])]
    want = [tuple(t[f"out.trimbounds.{k}"].tolist()) for k in range(meta["n_trim_stress"])]
    assert got == want
    assert want[1] != want[2], "fixture lost its knife-edge pair (librosa should decide differently)"


def test_trim_silence_slices_numpy_and_torch_alike(golden):
    t, _ = golden
    w = t["in.wav.voiced"]
    trimmed_np, bounds_np = trim_silence(w.numpy())
    trimmed_t, bounds_t = trim_silence(w)
    assert bounds_np == bounds_t == tuple(t["out.trim.voiced"].tolist())
    assert isinstance(trimmed_t, torch.Tensor) and isinstance(trimmed_np, np.ndarray)
    assert np.array_equal(trimmed_np, trimmed_t.numpy())
    assert trim_bounds(w.double()) == bounds_np  # float64 input is rounded to float32 like librosa's rms


def test_trim_edge_cases_match_librosa_semantics():
    # all-zero: every frame is 0 dB relative to a zero max -> nothing is trimmed (as librosa)
    assert trim_bounds(np.zeros(5000, np.float32)) == (0, 5000)
    assert trim_bounds(np.zeros(0, np.float32)) == (0, 0)
    # a single click in silence keeps the frames around it, at hop (512) granularity
    x = np.zeros(10_000, np.float32)
    x[5000] = 1.0
    start, end = trim_bounds(x)
    assert start % 512 == 0 and start <= 5000 < end and end - start <= 2048 + 512
    with pytest.raises(ValueError, match="mono"):
        trim_bounds(np.zeros((2, 100), np.float32))


def test_ve_mel_equals_official(golden):
    t, meta = golden
    for clip in meta["clips"]:
        start, end = t[f"out.trim.{clip}"].tolist()
        want = t[f"out.mel.{clip}"]
        got = ve_mel(t[f"in.wav.{clip}"].numpy()[start:end])
        assert got.shape == want.shape, clip
        assert got.dtype == torch.float32
        err = ((got - want).abs().max() / want.abs().max()).item()
        assert err <= MEL_RTOL, f"{clip}: mel rel err {err:.2e}"


@pytest.mark.parametrize("n", [1, 2, 150, 200, 201, 399, 400, 401, 16_000])
def test_ve_mel_frame_count_is_centered(n):
    # center=True: one frame per 160-sample hop plus one; short clips use numpy-style reflection
    x = np.sin(np.arange(n, dtype=np.float32) * 0.3) * 0.5
    mel = ve_mel(x)
    assert mel.shape == (1 + n // 160, 40)
    assert torch.isfinite(mel).all() and (mel >= 0).all()


def test_ve_mel_torch_input_equals_numpy_input(golden):
    t, _ = golden
    w = t["in.wav.short"]
    assert torch.equal(ve_mel(w), ve_mel(w.numpy()))


def test_ve_mel_puts_a_tone_in_the_right_band():
    # 1 kHz tone: slaney mel scale is linear below 1 kHz (200/3 Hz per mel); with 40 bands over
    # 0-8 kHz the peak band's centre must be the one nearest 1 kHz.
    from nutq.audio.melbank import hz_to_mel, mel_to_hz

    x = np.sin(2 * np.pi * 1000 * np.arange(16_000) / 16_000).astype(np.float32)
    peak = int(ve_mel(x).mean(0).argmax())
    centres = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(8000.0), 42))[1:-1]
    assert peak == int(np.abs(centres - 1000).argmin())


def test_ve_mel_rejects_empty_and_stereo():
    with pytest.raises(ValueError, match="non-empty mono"):
        ve_mel(np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="non-empty mono"):
        ve_mel(np.zeros((2, 1600), np.float32))
