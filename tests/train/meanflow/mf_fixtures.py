"""Shared pieces of the meanflow distillation tests: a tiny teacher and prepared fixture data."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def teacher(tiny_checkpoint):
    from nutq.train.meanflow.teacher import load_teacher

    return load_teacher(tiny_checkpoint)


@pytest.fixture(scope="session")
def prepared(tiny_checkpoint, tmp_path_factory):
    from nutq.train.data.prepared import write_prepared_fixture

    return write_prepared_fixture(tmp_path_factory.mktemp("mf-prepared"), checkpoint_dir=tiny_checkpoint,
                                  n_train=8, n_val=4, speakers=2, seed=3)


@pytest.fixture(scope="session")
def train_set(prepared):
    from nutq.train.data.prepared import PreparedDataset

    return PreparedDataset(prepared, "train")
