"""`nutq eval meanflow` (and the `nutq train meanflow` command line) on the tiny teacher."""

from __future__ import annotations

import json

import pytest
import soundfile as sf

from mf_fixtures import prepared  # noqa: F401  (fixture)
from nutq.cli import main


@pytest.fixture(scope="module")
def trained(tiny_checkpoint, prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("mf-run")
    rc = main(["train", "meanflow", "--teacher", str(tiny_checkpoint), "--data", str(prepared), "--out", str(out),
               "--max-steps", "2", "--batch-size", "2", "--lr", "1e-3", "--warmup-steps", "1",
               "--eval-examples", "1", "--no-tensorboard"])
    assert rc == 0
    return out / "s3gen_meanflow.safetensors"


def test_eval_report_plot_and_samples(tiny_checkpoint, prepared, trained, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    rc = main(["eval", "meanflow", "--teacher", str(tiny_checkpoint), "--student", str(trained), "--data",
               str(prepared), "--max-examples", "2", "--out", str(report_path), "--samples", str(tmp_path / "wav"),
               "--max-samples", "1"])
    assert rc == 0
    r = json.loads(report_path.read_text())
    m = r["methods"]
    # The tiny checkpoint ships a (random) meanflow decoder of its own: it stands in for Resemble's.
    assert set(m) == {"teacher10", "student2", "student1", "teacher_euler2_cosine", "teacher_euler2_linear",
                      "teacher_euler1", "resemble2", "resemble1"}
    assert m["teacher10"]["mel_l1"] == 0 and all(v == 0 for v in m["teacher10"]["band_db_vs_teacher"].values())
    for name, v in m.items():
        assert len(v["mel_l1_per_example"]) == 2 and v["flow_ms_median"] > 0
        assert list(v["band_db_vs_teacher"]) == ["0-1kHz", "1-2kHz", "2-3kHz", "3-6kHz", "6-8kHz"]
        if name != "teacher10":
            assert v["mel_l1"] > 0
    assert m["teacher_euler2_cosine"]["mel_l1"] != m["teacher_euler2_linear"]["mel_l1"]  # two grids really differ
    assert r["factor_2step"] == pytest.approx(
        min(m["teacher_euler2_cosine"]["mel_l1"], m["teacher_euler2_linear"]["mel_l1"]) / m["student2"]["mel_l1"])
    if r["plot"] is not None:  # matplotlib installed
        assert (tmp_path / "report.png").stat().st_size > 1000
    wavs = sorted(p.name for p in (tmp_path / "wav").iterdir())
    assert len(wavs) == 3 and {w.split(".")[1] for w in wavs} == {"teacher10", "student2", "student1"}
    data, sr = sf.read(tmp_path / "wav" / wavs[0])
    assert sr == 24_000 and len(data) > 0
    assert "closer than" in capsys.readouterr().out


def test_eval_errors_are_clear(tiny_checkpoint, prepared, tmp_path, capsys):
    rc = main(["eval", "meanflow", "--teacher", str(tiny_checkpoint), "--student", str(tmp_path / "nope.safetensors"),
               "--data", str(prepared), "--out", str(tmp_path / "r.json")])
    assert rc == 1 and "no student file" in capsys.readouterr().err
    rc = main(["train", "meanflow", "--teacher", str(tiny_checkpoint), "--data", str(tmp_path / "nodata"),
               "--out", str(tmp_path / "o")])
    assert rc == 1 and "not a prepared dataset" in capsys.readouterr().err
