"""`nutq data validate`: planted bad files are flagged for the right reason, good ones pass, bad
input never crashes the run, thresholds decide the exit status."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from nutq.cli import main
from nutq.train.data.audio_checks import decode, measure
from nutq.train.data.corpus import PLANTED, espeak_available, make_corpus
from nutq.train.data.manifest import Utterance, read_manifest, write_manifest
from nutq.train.data.text import TextReader
from nutq.train.data.validate import Thresholds, validate


@pytest.fixture(scope="module")
def reader(vocab_path):
    return TextReader(vocab_path)


def _check_planted(manifest, reader):
    utts, problems = read_manifest(manifest)
    report = validate(utts, problems, Thresholds(), reader, progress=False)
    by_id = {r["id"]: r for r in report["results"]}
    for name, check in PLANTED.items():
        flags = by_id[name]["errors"] + by_id[name]["warnings"]
        assert check in flags, (name, flags)
    for r in report["results"]:
        if not r["id"].startswith("bad-"):
            assert not r["errors"] and not r["warnings"], r
    assert not report["passed"] and report["usable"] == sum(1 for r in report["results"] if not r["errors"])
    return report


def test_planted_files_flagged_tones(tmp_path, reader):
    report = _check_planted(make_corpus(tmp_path, speakers=2, per_speaker=3, engine="tones"), reader)
    assert report["corpus"]["msa"]["all"]["speakers"] == 2  # two voices per dialect


@pytest.mark.skipif(not espeak_available(), reason="espeak-ng not installed (apt-get install espeak-ng)")
def test_planted_files_flagged_espeak(tmp_path, reader):
    _check_planted(make_corpus(tmp_path, speakers=2, per_speaker=3, engine="espeak"), reader)


def _tone(seconds=2.0, sr=24000, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > -0.5)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def test_bad_input_is_reported_not_raised(tmp_path, reader):
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    (tmp_path / "dir.wav").mkdir()
    sf.write(tmp_path / "stereo.wav", _tone(channels=2), 24000)
    sf.write(tmp_path / "mono.flac", _tone(), 24000)
    sf.write(tmp_path / "odd.wav", _tone(sr=32000), 32000)
    utts = [Utterance(id=n, audio=tmp_path / n, text="مرحبا بكم", speaker="s") for n in
            ("garbage.wav", "dir.wav", "missing.wav", "stereo.wav", "mono.flac", "odd.wav")]
    utts.append(Utterance(id="empty-text", audio=tmp_path / "mono.flac", text="  ", speaker="s2"))
    manifest = write_manifest(tmp_path / "m.jsonl", utts)
    with manifest.open("a") as f:
        f.write("{not json\n" + json.dumps({"audio": "x.wav"}) + "\n")
    utts, problems = read_manifest(manifest)
    report = validate(utts, problems, Thresholds(), reader, progress=False)
    checks = {r["id"]: r["errors"] + r["warnings"] for r in report["results"]}
    assert checks["garbage.wav"] == ["decode"] and checks["dir.wav"] == ["missing"] == checks["missing.wav"]
    assert checks["stereo.wav"] == ["mixed_down"] and checks["odd.wav"] == ["unusual_rate"]
    assert checks["mono.flac"] == []
    assert "transcript" in checks["empty-text"] and "duplicate" in checks["empty-text"]
    assert [p["line"] for p in report["failures"]["manifest"]] == [8, 9]


def test_measures_follow_the_signal():
    rng = np.random.default_rng(0)
    sr = 16000
    speech = np.concatenate([np.zeros(sr // 2), _tone(2.0, sr), np.zeros(sr // 2)]).astype(np.float32)
    clean = measure(speech, sr)
    assert clean.snr_db == 100.0 and 0.4 < clean.lead_silence_s < 0.6 and clean.clip_ratio == 0
    for snr in (10.0, 30.0):
        noise = rng.standard_normal(len(speech)).astype(np.float32) * 0.3 / np.sqrt(2) / 10 ** (snr / 20)
        est = measure(speech + noise, sr).snr_db
        assert abs(est - snr) < 6, (snr, est)
    assert measure(np.clip(speech * 10, -1, 1), sr).clip_ratio > 0.1


def test_cli_exit_status_and_json(tmp_path, capsys):
    manifest = make_corpus(tmp_path / "c", speakers=2, per_speaker=3, engine="tones")
    report_path = tmp_path / "r.json"
    assert main(["data", "validate", str(manifest), "--report", str(report_path), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "bad-truncated.wav" in out
    report = json.loads(report_path.read_text())
    assert not report["passed"] and set(PLANTED.values()) <= set(report["failures"])
    # only the good clips: passes, unless a target is out of reach
    good = [u for u in read_manifest(manifest)[0] if not u.id.startswith("bad-")]
    clean = write_manifest(tmp_path / "c" / "good.jsonl", good)
    assert main(["data", "validate", str(clean), "--quiet"]) == 0
    assert main(["data", "validate", str(clean), "--quiet", "--target", "msa=100"]) == 1
    assert "msa: " in capsys.readouterr().out.split("FAILED:")[-1]


def test_fail_on_promotes_a_warning(tmp_path, reader):
    sf.write(tmp_path / "a.wav", np.clip(_tone() * 8, -1, 1), 24000)
    sf.write(tmp_path / "b.wav", _tone(3.0), 24000)
    utts = [Utterance(id=n, audio=tmp_path / n, text="مرحبا", speaker="s") for n in ("a.wav", "b.wav")]
    lenient = validate(utts, [], Thresholds(), reader, progress=False)
    strict = validate(utts, [], Thresholds(fail_on=frozenset({"clipping"})), reader, progress=False)
    assert lenient["usable"] == 2 and strict["usable"] == 0  # b alone has no reference left
    assert "lone_speaker" in strict["failures"] and strict["severity"]["clipping"] == "error"
    with pytest.raises(ValueError, match="fail-on"):
        Thresholds(fail_on=frozenset({"duration"}))


def test_decode_reports_truncation(tmp_path):
    sf.write(tmp_path / "x.flac", _tone(), 24000)
    data = (tmp_path / "x.flac").read_bytes()
    (tmp_path / "x.flac").write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception) as e:
        decode(tmp_path / "x.flac")
    assert getattr(e.value, "kind", None) in ("truncated", "decode")
