"""`nutq data prepare` on a stand-in corpus with the tiny checkpoint: examples equal what inference
builds, splits are speaker-disjoint, output is deterministic and resumable."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from nutq.cli import main
from nutq.train.data.corpus import PLANTED, make_corpus
from nutq.train.data.errors import DataError
from nutq.train.data.manifest import read_manifest
from nutq.train.data.prepare import PrepareSettings, prepare
from nutq.train.data.prepared import PreparedDataset

SETTINGS = PrepareSettings(val_fraction=0.3, shard_size=4, batch_size=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"), speakers=4, per_speaker=3, engine="tones")


@pytest.fixture(scope="module")
def prepared(corpus, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "p"
    meta = prepare(corpus, tiny_checkpoint, out, SETTINGS, progress=False)
    return out, meta


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_examples_equal_what_inference_builds(prepared, corpus, tiny_checkpoint):
    from nutq import TTS
    from nutq.audio.resample import resample

    out, meta = prepared
    tts = TTS.from_local(tiny_checkpoint)
    utts = {u.id: u for u in read_manifest(corpus)[0]}
    ds = PreparedDataset(out, "train")
    ds.check_checkpoint(tiny_checkpoint)
    for i in (0, len(ds) - 1):
        ex = ds[i]
        u, ref = utts[ex.id], utts[ex.ref_id]
        assert ex.text_tokens.tolist() == tts.text_ids(u.text)[1:-1].tolist()
        own, rv = tts.prepare_voice(u.audio), tts.prepare_voice(ref.audio)
        assert torch.allclose(ex.ve_embedding, own.speaker_emb[0], atol=1e-6)
        assert torch.equal(ex.prompt_speech_tokens, rv.prompt_tokens[0])
        assert torch.equal(ex.flow_prompt_tokens, rv.gen.prompt_token[0])
        assert torch.allclose(ex.flow_prompt_mel, rv.gen.prompt_feat[0], atol=1e-6)
        assert torch.allclose(ex.xvector, rv.gen.embedding[0], atol=1e-6)
        import soundfile as sf

        wav, sr = sf.read(str(u.audio), dtype="float32")
        w16 = resample(resample(wav, sr, 24000), 24000, 16000)
        tokens, _ = tts.s3gen.tokenizer.tokenize(torch.from_numpy(np.ascontiguousarray(w16)).reshape(1, -1))
        assert torch.equal(ex.speech_tokens, tokens[0])


def test_splits_refs_and_skipped(prepared):
    out, meta = prepared
    train, val = PreparedDataset(out, "train"), PreparedDataset(out, "val")
    assert len(train) and len(val) and not set(train.speakers) & set(val.speakers)
    for ds in (train, val):
        ids = {ds[i].id: ds[i].speaker for i in range(len(ds))}
        assert all(ids[ds[i].ref_id] == ds[i].speaker and ds[i].ref_id != ds[i].id for i in range(len(ds)))
    skipped = {s["id"]: s["reasons"] for s in meta["skipped"]}
    errors = {"silent", "sample_rate", "truncated", "unencodable", "duplicate", "duration"}
    assert {n for n, c in PLANTED.items() if c in errors} == set(skipped)
    assert all(any(r.startswith(PLANTED[n]) for r in rs) for n, rs in skipped.items())
    assert len(train) + len(val) == 12 + sum(1 for c in PLANTED.values() if c not in errors)


def test_deterministic_and_resumable(prepared, corpus, tiny_checkpoint, tmp_path):
    out, _ = prepared
    again = tmp_path / "again"
    assert prepare(corpus, tiny_checkpoint, again, SETTINGS, progress=False)["computed"] > 1
    assert _files(again) == _files(out)  # two runs, identical bytes
    assert prepare(corpus, tiny_checkpoint, again, SETTINGS, progress=False)["computed"] == 0
    (again / "train" / "shard-00001.safetensors").unlink()  # as if interrupted before it was written
    (again / "val" / "shard-00000.safetensors").write_bytes(b"half a shard")
    assert prepare(corpus, tiny_checkpoint, again, SETTINGS, progress=False)["computed"] == 2
    assert _files(again) == _files(out)


def test_other_settings_need_force(prepared, corpus, tiny_checkpoint, tmp_path, capsys):
    out, _ = prepared
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    args = ["data", "prepare", str(corpus), "--model-dir", str(tiny_checkpoint), "--out", str(copy), "--quiet",
            "--shard-size", "4", "--batch-size", "3", "--val-fraction", "0.5"]
    assert main(args) == 1 and "--force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0
    assert "val:" in capsys.readouterr().out
    with pytest.raises(DataError, match="at least 1 s"):
        prepare(corpus, tiny_checkpoint, tmp_path / "x", PrepareSettings(
            thresholds=SETTINGS.thresholds.__class__(min_seconds=0.5)), progress=False)


def test_workers_write_the_same_bytes(prepared, corpus, tiny_checkpoint, tmp_path):
    out, _ = prepared
    par = tmp_path / "par"
    assert prepare(corpus, tiny_checkpoint, par, SETTINGS, workers=2, progress=False)["computed"] > 1
    assert _files(par) == _files(out)
