"""The generic training loop: seeded order, schedule, exact resume after a real SIGINT, logs."""

from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from nutq.train.loop import DataOrder, LoopConfig, load_checkpoint, run
from nutq.train.loop.checkpoint import CheckpointFormatError
from nutq.train.loop.schedule import lr_factor


class ToyTask:
    """Linear regression with dropout, so the RNG stream matters for exactness."""

    kind = "toy"
    device = torch.device("cpu")

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 1))
        self.val = torch.randn(6, 4, generator=torch.Generator().manual_seed(3))

    def parameters(self):
        return self.model.parameters()

    def collate(self, examples):
        return torch.stack([x for x, _ in examples]), torch.stack([y for _, y in examples])

    def loss(self, batch):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.model(x).squeeze(-1), y)
        return loss, {"loss": loss.item()}

    def evaluate(self):
        return {"loss": float(self.model(self.val).pow(2).mean())}

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, sd):
        self.model.load_state_dict(sd)

    def train(self, mode=True):
        self.model.train(mode)


def dataset(n=10):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(n, 4, generator=g)
    return [(x[i], x[i].sum()) for i in range(n)]


CFG = LoopConfig(batch_size=3, grad_accum=2, epochs=3, lr=1e-2, warmup_steps=2, eval_every=2, seed=7,
                 tensorboard=False, progress=False)


def test_order_is_seeded_complete_and_resumable():
    a = DataOrder(10, 3, seed=1)
    epoch0 = [a.next_batch() for _ in range(a.batches_per_epoch)]
    assert sorted(i for b in epoch0 for i in b) == list(range(10)) and len(epoch0[-1]) == 1
    a.next_batch()
    b = DataOrder(10, 3, seed=1)
    b.load_state_dict(a.state_dict())
    assert [a.next_batch() for _ in range(5)] == [b.next_batch() for _ in range(5)]
    assert DataOrder(10, 3, seed=2).next_batch() != DataOrder(10, 3, seed=1).next_batch()
    with pytest.raises(ValueError, match="would not continue"):
        DataOrder(11, 3, seed=1).load_state_dict(a.state_dict())


def test_warmup_then_cosine():
    f = [lr_factor(s, 4, 12) for s in range(13)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0] and f[4] == 1.0
    assert all(x > y for x, y in zip(f[4:12], f[5:13])) and f[12] == pytest.approx(0.0)


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    full = ToyTask()
    r_full = run(full, dataset(), CFG, tmp_path / "full")
    assert r_full.status == "done" and r_full.step == r_full.total_steps == 6  # ceil(ceil(10/3)/2) * 3

    def interrupt(step, _metrics):
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal path, handled between steps

    part = ToyTask()
    r1 = run(part, dataset(), CFG, tmp_path / "part", on_step=interrupt)
    assert r1.status == "interrupted" and r1.step == 3
    resumed = ToyTask(seed=99)  # different fresh weights: everything must come from the checkpoint
    r2 = run(resumed, dataset(), CFG, tmp_path / "part")
    assert r2.status == "done" and r2.step == 6
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt", kind="toy")
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt", kind="toy")
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in ("exp_avg", "exp_avg_sq"))
    assert a["scheduler"] == b["scheduler"] and a["loop"]["order"] == b["loop"]["order"]

    def losses(d):
        rows = [json.loads(line) for line in (d / "logs" / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["split"], r["loss"]) for r in rows]

    assert losses(tmp_path / "full") == losses(tmp_path / "part")
    assert [s for s, split, _ in losses(tmp_path / "full") if split == "val"] == [2, 4, 6]


def test_training_lowers_the_loss_and_logs_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    cfg = LoopConfig(batch_size=10, epochs=60, lr=3e-2, warmup_steps=0, tensorboard=True, progress=False)
    task = ToyTask()
    task.model[1].p = 0.0
    data = dataset()
    before = float(task.loss(task.collate(data))[0].detach())
    run(task, data, cfg, tmp_path)
    assert float(task.loss(task.collate(data))[0].detach()) < 0.5 * before
    assert list((tmp_path / "logs" / "tb").glob("events.out.tfevents.*"))


def test_foreign_or_torn_checkpoints_are_clear_errors(tmp_path):
    run(ToyTask(), dataset(), LoopConfig(batch_size=5, max_steps=1, tensorboard=False, progress=False), tmp_path)
    ck = tmp_path / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointFormatError, match="'toy' checkpoint"):
        load_checkpoint(ck, kind="t3")
    ck.write_bytes(ck.read_bytes()[:100])
    with pytest.raises(CheckpointFormatError, match="unreadable"):
        run(ToyTask(), dataset(), LoopConfig(batch_size=5, max_steps=1, tensorboard=False, progress=False), tmp_path)
