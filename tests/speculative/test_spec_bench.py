"""`nutq bench --speculative` runs end to end on the tiny checkpoint and reports the metrics."""

from __future__ import annotations

import json

from nutq.cli import main


def test_bench_speculative(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "spec.json"
    rc = main(["bench", "--model-dir", str(tiny_checkpoint), "--speculative", "target", "--trials", "1",
               "--warmup", "0", "--tokens", "8", "--text", "مرحبا", "--json", str(out),
               "--history-file", str(tmp_path / "h.jsonl")])
    assert rc == 0
    r = json.loads(out.read_text())
    assert r["acceptance_rate"] == 1.0 and r["tokens_per_forward"] > 1.0
    assert r["speculative_tokens_per_s"] > 0 and r["plain_tokens_per_s"] > 0


def test_bench_speculative_bad_draft(tiny_checkpoint, tmp_path, capsys):
    rc = main(["bench", "--model-dir", str(tiny_checkpoint), "--speculative", str(tmp_path / "nope.safetensors"),
               "--trials", "1", "--warmup", "0", "--history-file", str(tmp_path / "h.jsonl")])
    assert rc != 0
    assert "no draft file" in capsys.readouterr().err
