"""The prepared-dataset reader (nutq.train.data.prepared): format round trip and the fixture."""

from __future__ import annotations

import json

import pytest
import torch

from nutq.train.data.errors import DataError
from nutq.train.data.prepared import (INDEX_FILE, PreparedDataset, PreparedExample, checkpoint_fingerprint,
                                      write_prepared_fixture, write_shard)
from nutq.text.tokenizer import MTLTokenizer


@pytest.fixture(scope="module")
def fixture_root(tiny_checkpoint, tmp_path_factory):
    return write_prepared_fixture(tmp_path_factory.mktemp("prep"), checkpoint_dir=tiny_checkpoint,
                                  n_train=8, n_val=4, speakers=2, seed=0)


def test_fixture_examples_are_valid_and_speaker_disjoint(fixture_root, tiny_checkpoint):
    tok = MTLTokenizer.from_file(tiny_checkpoint / "grapheme_mtl_merged_expanded_v1.json")
    train, val = PreparedDataset(fixture_root, "train"), PreparedDataset(fixture_root, "val")
    assert (len(train), len(val)) == (8, 4)
    assert not set(train.speakers) & set(val.speakers)
    for ds in (train, val):
        by_id = {ds[i].id: ds[i] for i in range(len(ds))}
        assert len(ds.meta["splits"][ds.split]["shards"]) == 2  # examples come from both shards
        for ex in by_id.values():
            assert ex.text_tokens.dtype == torch.int64 and ex.text_tokens.tolist() == tok.encode(ex.text, "ar")
            assert ex.speech_tokens.dtype == torch.int64 and int(ex.speech_tokens.max()) < 6561
            assert ex.ve_embedding.shape == (256,) and ex.xvector.shape == (192,)
            assert ex.prompt_speech_tokens.shape == (150,)
            assert ex.flow_prompt_mel.shape == (2 * ex.flow_prompt_tokens.numel(), 80)
            ref = by_id[ex.ref_id]
            assert ref.id != ex.id and ref.speaker == ex.speaker and ex.speaker in ds.speakers


def test_shard_round_trip_is_exact(tmp_path, fixture_root):
    ds = PreparedDataset(fixture_root, "train")
    examples = [ds[i] for i in range(len(ds))]
    write_shard(tmp_path / "train" / "shard-00000.safetensors", examples)
    (tmp_path / INDEX_FILE).write_text(json.dumps({**ds.meta, "splits": {"train": {
        "shards": [{"name": "shard-00000.safetensors", "count": len(examples)}], "count": len(examples),
        "speakers": ds.speakers, "seconds": 1.0}}}))
    again = PreparedDataset(tmp_path, "train")
    assert len(again) == len(examples)
    for a, b in zip(examples, (again[i] for i in range(len(again)))):
        for name, value in vars(a).items():
            other = getattr(b, name)
            if isinstance(value, torch.Tensor):
                assert value.dtype == other.dtype and torch.equal(value, other), name
            else:
                assert value == other, name
    assert again[-1].id == examples[-1].id
    with pytest.raises(IndexError):
        again[len(examples)]


def test_dataloader_reads_it(fixture_root):
    loader = torch.utils.data.DataLoader(PreparedDataset(fixture_root), batch_size=3, collate_fn=list)
    batches = list(loader)
    assert [len(b) for b in batches] == [3, 3, 2] and all(isinstance(e, PreparedExample) for b in batches for e in b)


def test_reader_errors(tmp_path, fixture_root, tiny_checkpoint):
    with pytest.raises(DataError, match="not a prepared dataset"):
        PreparedDataset(tmp_path)
    with pytest.raises(DataError, match="no split"):
        PreparedDataset(fixture_root, "test")
    meta = json.loads((fixture_root / INDEX_FILE).read_text())
    (tmp_path / INDEX_FILE).write_text(json.dumps({**meta, "complete": False}))
    with pytest.raises(DataError, match="incomplete"):
        PreparedDataset(tmp_path)
    ds = PreparedDataset(fixture_root)
    ds.check_checkpoint(tiny_checkpoint)  # the fixture records the checkpoint it was made for
    assert ds.meta["checkpoint"] == checkpoint_fingerprint(tiny_checkpoint)
    ds.meta = {**ds.meta, "checkpoint": "prep-other"}
    with pytest.raises(DataError, match="prepared with checkpoint"):
        ds.check_checkpoint(tiny_checkpoint)
