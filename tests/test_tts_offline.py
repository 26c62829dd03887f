"""Offline synthesis end to end on a tiny random checkpoint made at test time."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from nutq.checkpoints.files import resolve
from nutq.checkpoints.make import make_checkpoint
from nutq.engine.voice import VoiceError, load_conds, save_conds
from nutq.tts import SAMPLE_RATE, TTS


@pytest.fixture(scope="module")
def tiny_dir(tiny_checkpoint):
    return tiny_checkpoint


@pytest.fixture(scope="module")
def tts(tiny_dir):
    return TTS.from_local(tiny_dir)


def test_tiny_checkpoint_has_the_official_layout_and_loads_strictly(tiny_dir, tts):
    f = resolve(tiny_dir)
    assert f.sidecar["size"] == "tiny" and f.conds is not None
    assert tts.default_voice.prompt_tokens.shape == (1, 150)
    assert tts.default_voice.gen.prompt_feat.shape == (1, 500, 80)


def test_make_checkpoint_refuses_to_overwrite(tiny_dir):
    with pytest.raises(FileExistsError):
        make_checkpoint(tiny_dir, size="tiny")


def test_synthesize_is_seeded_and_960_samples_per_token(tts):
    a = tts.synthesize("مرحبا بكم", seed=3, max_new_tokens=12, watermark=False)
    b = tts.synthesize("مرحبا بكم", seed=3, max_new_tokens=12, watermark=False)
    assert a.dtype == np.float32 and np.array_equal(a, b)
    assert len(a) > 0 and len(a) % 960 == 0 and len(a) <= 12 * 960
    assert np.abs(a).max() <= 0.99
    assert np.all(a[:480] == 0)  # official trim-fade: the first 20 ms are silent


def test_voice_cloning_from_a_clip(tts, tmp_path):
    sr = 16000
    t = np.arange(int(2.5 * sr)) / sr
    clip = (0.3 * np.sin(2 * np.pi * (140 + 30 * np.sin(3 * t)) * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size))
    path = tmp_path / "ref.flac"
    sf.write(path, np.stack([clip, clip], axis=1), sr)  # stereo, other rate, other format
    voice = tts.prepare_voice(path, exaggeration=0.7)
    assert voice.speaker_emb.shape == (1, 256) and voice.exaggeration == 0.7
    # 2.5 s at 25 tokens/s; the tokenizer's stride-2 convs round the last partial token up
    assert voice.prompt_tokens.shape[1] == 63
    # the S3Gen prompt is cut to whole tokens, so mel frames = 2 x tokens exactly
    assert voice.gen.prompt_feat.shape[1] == 2 * voice.gen.prompt_token.shape[1] == 124
    save_conds(voice, tmp_path / "v.pt")
    back = load_conds(tmp_path / "v.pt")
    assert torch.equal(back.prompt_tokens, voice.prompt_tokens) and back.exaggeration == pytest.approx(0.7)
    wav = tts.synthesize("اختبار", voice=back, seed=1, max_new_tokens=6)
    assert len(wav) % 960 == 0


@pytest.mark.parametrize("bad, msg", [
    (b"not audio at all", "cannot decode"),
    (np.zeros(24000, dtype=np.float32), "silent"),
    (np.ones(1000, dtype=np.float32) * 0.1, "at least"),
])
def test_bad_reference_audio_is_a_clear_error(tts, bad, msg):
    with pytest.raises(VoiceError, match=msg):
        tts.prepare_voice(bad, sr=None if isinstance(bad, bytes) else 24000)


def test_empty_text_is_rejected(tts):
    with pytest.raises(ValueError, match="empty"):
        tts.synthesize("   ", seed=0)


def test_speak_cli_writes_a_24khz_wav(tiny_dir, tmp_path):
    out = tmp_path / "speech.wav"
    p = subprocess.run([sys.executable, "-m", "nutq.cli", "speak", "السلام عليكم 2025", "-o", str(out),
                        "--model-dir", str(tiny_dir), "--seed", "0", "--max-tokens", "10"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    wav, sr = sf.read(out)
    assert sr == SAMPLE_RATE and wav.ndim == 1 and 0 < len(wav) <= 10 * 960
