"""`nutq bench` on a tiny checkpoint: per-stage JSON, history, and the underrun model."""

from __future__ import annotations

import json

import pytest

from nutq.bench.latency import playback_underruns
from nutq.cli import main


def test_underrun_model():
    # chunks of 1 s each arriving at 0, 0.5, 3.0: the third arrives 1 s after playback ran dry
    assert playback_underruns([0.0, 0.5, 3.0], [1.0, 1.0, 1.0]) == (1, pytest.approx(1.0))
    assert playback_underruns([0.0, 0.9, 1.8], [1.0, 1.0, 1.0]) == (0, 0.0)
    # a stall pushes the playback clock: the next chunk is judged against the new schedule
    assert playback_underruns([0.0, 2.0, 3.5], [1.0, 1.0, 1.0])[0] == 2
    assert playback_underruns([], []) == (0, 0.0)


def test_bench_writes_results_and_history(tmp_path, capsys, tiny_checkpoint):
    ckpt = tiny_checkpoint
    hist, out = tmp_path / "h.jsonl", tmp_path / "r.json"
    args = ["bench", "--model-dir", str(ckpt), "--tokens", "8", "--trials", "2", "--warmup", "0",
            "--history-file", str(hist), "--json", str(out)]
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert len(r["trials"]) == 2 and r["tokens"] == 8
    m = r["median"]
    assert m["t3_tokens"] == 8 and m["t3_tokens_per_s"] > 0
    assert 0 < m["ttfa_ms"] <= 1e3 * m["total_s"] and m["ttfa_p95_ms"] >= m["ttfa_ms"] - 1e-9
    for k in ("frontend_ms", "prefill_ms", "first_chunk_flow_ms", "first_chunk_hift_ms", "rtf", "peak_rss_mb",
              "max_gap_ms", "underruns"):
        assert k in m
    assert main(args) == 0  # a second run appends
    assert len(hist.read_text().splitlines()) == 2
    capsys.readouterr()
    assert main(["bench", "--history", "--history-file", str(hist)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3  # header + 2 runs


def test_bench_errors_are_clear(tmp_path, capsys, monkeypatch, tiny_checkpoint):
    monkeypatch.delenv("NUTQ_MODEL_DIR", raising=False)
    assert main(["bench", "--history-file", str(tmp_path / "h")]) == 1
    assert "no model" in capsys.readouterr().err
    ckpt = tiny_checkpoint
    monkeypatch.setenv("NUTQ_REFENV", str(tmp_path / "missing"))
    assert main(["bench", "--model-dir", str(ckpt), "--tokens", "4", "--trials", "1", "--warmup", "0",
                 "--vs-reference", "--history-file", str(tmp_path / "h")]) == 1
    assert "reference env" in capsys.readouterr().err
