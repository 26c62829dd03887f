"""The optional Perth watermark: nutq's own network on the weights of the installed resemble-perth
wheel (a test dependency), applied once per synthesis; off quietly when the package is missing,
one warning when it is installed but unusable, a clear error when required.

Parity with Perth's own watermarker and detector: tests/test_watermark_parity.py.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from nutq import cli
from nutq.audio import watermark as wm
from nutq.tts import SAMPLE_RATE, TTS

from conftest import REPO

pytestmark = pytest.mark.skipif(wm.checkpoint_dir() is None, reason="resemble-perth (a test dependency) is missing")


def clear_caches():
    for f in (wm._network, wm._warn_unusable, wm.default_watermarker):
        f.cache_clear()


@pytest.fixture(autouse=True)
def fresh_state():
    """Availability and the network are decided once per process; start and end each test clean."""
    clear_caches()
    yield
    clear_caches()


@pytest.fixture
def perth_missing(monkeypatch):
    monkeypatch.setattr(wm, "checkpoint_dir", lambda: None)


@pytest.fixture
def perth_broken(monkeypatch, tmp_path):
    """An installed resemble-perth whose weight file is damaged."""
    folder = tmp_path / "implicit"
    folder.mkdir()
    shutil.copy(wm.checkpoint_dir() / "hparams.yaml", folder)
    (folder / "perth_net_250000.pth.tar").write_bytes(b"not a checkpoint")
    monkeypatch.setattr(wm, "checkpoint_dir", lambda: folder)
    return folder


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint)


def speech(seconds: float = 2.0, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Speech-like: harmonics of a wobbling f0, a syllable-rate envelope, a little noise. (A steady
    pure harmonic tone is a poor test signal: Perth's detector scores it high even unmarked.)"""
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(130 + 25 * np.sin(2 * np.pi * 0.7 * t)) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 9)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    noise = 0.01 * np.random.default_rng(0).standard_normal(t.size)
    return (0.25 * x / np.abs(x).max() + noise).astype(np.float32)


def test_missing_perth_means_no_watermark_without_a_warning(perth_missing, tts, caplog):
    assert wm.available() is False and wm.watermarker_for(False) is None
    with caplog.at_level(logging.WARNING):
        assert wm.watermarker_for(None) is None
        a = tts.synthesize("مرحبا", seed=2, max_new_tokens=6)
    assert np.array_equal(a, tts.synthesize("مرحبا", seed=2, max_new_tokens=6, watermark=False))
    assert caplog.records == []


def test_required_but_missing_is_a_clear_error_before_any_synthesis(perth_missing, tts, monkeypatch):
    def no_generation(*a, **k):
        raise AssertionError("synthesis started although the required watermark is unavailable")

    monkeypatch.setattr("nutq.engine.engine.generate_speech_tokens", no_generation)
    with pytest.raises(wm.WatermarkUnavailable, match=r'resemble-perth is not installed.*nutq\[watermark\].*--no-watermark'):
        tts.synthesize("مرحبا", seed=0, max_new_tokens=4, watermark=True)
    with pytest.raises(wm.WatermarkUnavailable, match="not installed"):
        wm.Watermarker().apply(np.ones(100, dtype=np.float32), SAMPLE_RATE)


def test_broken_install_warns_once_and_leaves_audio_unmarked(perth_broken, tts, caplog):
    with caplog.at_level(logging.WARNING, logger="nutq.audio.watermark"):
        a = tts.synthesize("مرحبا", seed=2, max_new_tokens=6)
        b = tts.synthesize("مرحبا", seed=2, max_new_tokens=6)
    plain = tts.synthesize("مرحبا", seed=2, max_new_tokens=6, watermark=False)
    assert np.array_equal(a, plain) and np.array_equal(b, plain)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1, warnings
    assert "watermark is off" in warnings[0] and "perth_net_250000.pth.tar" in warnings[0] and "Traceback" not in warnings[0]
    with pytest.raises(wm.WatermarkUnavailable, match="perth_net_250000.pth.tar is not a readable torch checkpoint"):
        tts.synthesize("مرحبا", seed=2, max_new_tokens=6, watermark=True)


def test_a_checkpoint_for_another_network_is_refused(perth_broken):
    hp = perth_broken / "hparams.yaml"
    hp.write_text(hp.read_text().replace("hidden_size: 256", "hidden_size: 512"))
    with pytest.raises(wm.WatermarkUnavailable, match="describes another network.*hidden_size"):
        wm.watermarker_for(True)


def test_default_synthesis_is_marked_once_and_keeps_its_length(tts):
    plain = tts.synthesize("مرحبا بكم", seed=2, max_new_tokens=20, watermark=False)
    marked = tts.synthesize("مرحبا بكم", seed=2, max_new_tokens=20)
    assert len(plain) > 0 and len(marked) == len(plain), "960 samples per token must survive the watermark"
    assert marked.dtype == np.float32 and not np.array_equal(marked, plain)
    assert np.array_equal(marked, tts.synthesize("مرحبا بكم", seed=2, max_new_tokens=20, watermark=True))
    w = wm.default_watermarker()
    assert w.detect(marked, SAMPLE_RATE) > 0.9 > 0.1 > w.detect(plain, SAMPLE_RATE)
    assert np.array_equal(w.apply(plain, SAMPLE_RATE), marked), "marking is deterministic, applied exactly once"


def test_the_samples_the_round_trip_drops_are_kept_unmarked():
    x = speech(1.0)[:-7]
    # 24 kHz -> 32 kHz (ceil) -> the iSTFT keeps whole hops of 320 -> back to 24 kHz (ceil)
    kept = -(-(-(-len(x) * 4 // 3) // 320 * 320) * 3 // 4)
    y = wm.Watermarker().apply(x, SAMPLE_RATE)
    assert len(y) == len(x) and 0 < len(x) - kept <= 240
    assert np.array_equal(y[kept:], x[kept:]) and not np.array_equal(y[:kept], x[:kept])


def test_detect_scores_and_bad_input():
    w = wm.Watermarker()
    x = speech()
    # Perth rounds the score at 0.5; these clips sit far from it on either side.
    assert w.detect(w.apply(x, SAMPLE_RATE), SAMPLE_RATE) > 0.75 and w.detect(x, SAMPLE_RATE) < 0.25
    assert w.detect(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE) == 0.0, "silence carries no mark"
    assert w.apply(np.zeros(0, dtype=np.float32), SAMPLE_RATE).size == 0
    with pytest.raises(ValueError, match="mono"):
        w.apply(np.zeros((2, 100), dtype=np.float32), SAMPLE_RATE)
    with pytest.raises(ValueError, match="non-empty mono"):
        w.detect(np.zeros(0, dtype=np.float32), SAMPLE_RATE)


@pytest.mark.parametrize("flag, expected", [([], None), (["--no-watermark"], False)])
def test_speak_passes_the_watermark_choice(flag, expected, tmp_path, monkeypatch):
    seen = {}

    class RecordingTTS:
        def __init__(self, *a, **k):
            pass

        def synthesize(self, text, **kw):
            seen.update(kw)
            return np.zeros(960, dtype=np.float32)

    monkeypatch.setattr("nutq.tts.TTS", RecordingTTS)
    monkeypatch.setattr("nutq.cli._resolve", lambda args, flow="cfm": None)
    assert cli.main(["speak", "مرحبا", "-o", str(tmp_path / "x.wav"), *flag]) == 0
    assert seen["watermark"] is expected


def _broken_package(root, name: str) -> None:
    """A package that fails to import the way a CPU-torch torchaudio does."""
    (root / name).mkdir()
    (root / name / "__init__.py").write_text(
        f"raise OSError('Could not load this library: {name}/lib/_{name}.so')\n")


def test_speak_marks_its_output_with_broken_torchaudio_librosa_and_perth_on_the_path(tiny_checkpoint, tmp_path):
    """What users of the CPU torch wheel hit: nutq must never import these."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("torchaudio", "librosa", "perth"):
        _broken_package(broken, name)
    out = tmp_path / "speech.wav"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(broken), str(REPO / "src")]))
    p = subprocess.run([sys.executable, "-m", "nutq.cli", "speak", "مرحبا بكم", "-o", str(out), "--model-dir",
                        str(tiny_checkpoint), "--max-tokens", "20", "--seed", "1"], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    wav, sr = sf.read(out, dtype="float32")
    assert sr == SAMPLE_RATE and wm.Watermarker().detect(wav, sr) > 0.9, "the written file must carry the mark"


def test_speak_with_a_broken_install_prints_one_warning_line_and_writes_audio(tiny_checkpoint, tmp_path):
    """A damaged resemble-perth install found through its metadata: one line on stderr, no traceback."""
    site = tmp_path / "site"
    dist = site / "resemble_perth-1.0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: resemble-perth\nVersion: 1.0.1\n")
    (site / wm.CHECKPOINT_DIR).mkdir(parents=True)
    shutil.copy(wm.checkpoint_dir() / "hparams.yaml", site / wm.CHECKPOINT_DIR)
    (site / wm.CHECKPOINT_DIR / "perth_net_250000.pth.tar").write_bytes(b"\0" * 64)
    out = tmp_path / "speech.wav"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), str(REPO / "src")]))
    p = subprocess.run([sys.executable, "-m", "nutq.cli", "speak", "مرحبا", "-o", str(out), "--model-dir",
                        str(tiny_checkpoint), "--max-tokens", "8", "--seed", "1"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "watermark is off" in lines[0] and "Traceback" not in p.stderr, p.stderr
    assert out.exists()


def test_importing_and_marking_load_nothing_of_perths_dependencies():
    code = ("import sys, numpy as np; from nutq.audio.watermark import Watermarker; w = Watermarker(); "
            "x = np.sin(np.arange(24000) / 7).astype(np.float32) * 0.2; w.detect(w.apply(x, 24000), 24000); "
            "print(sorted(m for m in ('perth', 'torchaudio', 'librosa', 'scipy', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
