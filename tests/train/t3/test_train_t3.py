"""`nutq train t3` / `nutq eval t3` on a tiny checkpoint: prepared data -> train (the loss falls)
-> interrupt + resume (exactly the uninterrupted run) -> export (loads strictly in nutq, and in the
official T3 in the reference env) -> eval report (the tuned model beats the base on held-out data)."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
import torch

from conftest import REPO, refenv_python
from nutq.checkpoints import files as ckfiles
from nutq.cli import main
from nutq.models.registry import configs_from_sidecar, load_component
from nutq.train.data.prepared import PreparedDataset, write_prepared_fixture
from nutq.train.loop import LoopConfig
from nutq.train.t3.adapters import LoRALinear
from nutq.train.t3.batch import collate
from nutq.train.t3.loss import forward_logits
from nutq.train.t3.trainer import T3TrainOptions, build_task, train_t3

FAST = dict(lr=2e-3, warmup_steps=1, tensorboard=False, progress=False)


@pytest.fixture(scope="module")
def prepared(tiny_checkpoint, tmp_path_factory):
    return write_prepared_fixture(tmp_path_factory.mktemp("prepared"), checkpoint_dir=tiny_checkpoint)


@pytest.fixture(scope="module")
def trained(tiny_checkpoint, prepared, tmp_path_factory):
    """One CLI run: 6 steps of batch 4 with the first 6 layers frozen."""
    out = tmp_path_factory.mktemp("run")
    rc = main(["train", "t3", str(prepared), "--model-dir", str(tiny_checkpoint), "--out", str(out),
               "--max-steps", "6", "--lr", "2e-3", "--warmup-steps", "1", "--eval-every", "3"])
    assert rc == 0
    return out


def test_training_lowers_the_loss_on_a_fixed_batch(tiny_checkpoint, prepared):
    opts = T3TrainOptions(loop=LoopConfig(batch_size=4, **FAST))
    task, train_set, _ = build_task(tiny_checkpoint, prepared, opts)
    batch = task.collate([train_set[i] for i in range(4)])
    opt = torch.optim.AdamW(list(task.parameters()), lr=2e-3)
    task.train(True)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss, _ = task.loss(batch)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses
    frozen = task.model.tfmr.layers[5].mlp.up_proj.weight
    assert not frozen.requires_grad and task.model.tfmr.layers[6].mlp.up_proj.weight.requires_grad


def test_run_writes_logs_checkpoint_and_an_official_layout_export(trained, tiny_checkpoint):
    rows = [json.loads(x) for x in (trained / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if r["split"] == "val"] == [3, 6]
    assert {"loss", "speech_acc", "msa/loss"} <= set(next(r for r in rows if r["split"] == "val"))
    assert list((trained / "logs" / "tb").glob("events.out.tfevents.*"))
    assert (trained / "checkpoints" / "last.pt").exists()
    model_dir = trained / "model"
    info = json.loads((model_dir / "trained.json").read_text())
    assert info["steps"] == 6 and info["options"]["freeze_layers"] == 6 and info["options"]["mode"] == "freeze"
    # Strict nutq load of the exported directory (every file present), and the weights moved.
    files = ckfiles.resolve(model_dir)
    cfg = configs_from_sidecar(files.sidecar)["t3"]
    tuned = load_component(model_dir, "t3", cfg)
    base = load_component(tiny_checkpoint, "t3", cfg)
    assert torch.equal(tuned.tfmr.layers[0].mlp.up_proj.weight, base.tfmr.layers[0].mlp.up_proj.weight)
    assert not torch.equal(tuned.tfmr.layers[6].mlp.up_proj.weight, base.tfmr.layers[6].mlp.up_proj.weight)


def test_interrupted_lora_run_resumes_exactly(tiny_checkpoint, prepared, tmp_path):
    opts = T3TrainOptions(loop=LoopConfig(batch_size=2, grad_accum=2, max_steps=3, **FAST), mode="lora", lora_rank=4)

    def interrupt(step, _):
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    whole, whole_dir = train_t3(tiny_checkpoint, prepared, tmp_path / "whole", opts)
    part, none = train_t3(tiny_checkpoint, prepared, tmp_path / "part", opts, on_step=interrupt)
    assert (part.status, part.step, none) == ("interrupted", 1, None)
    resumed, resumed_dir = train_t3(tiny_checkpoint, prepared, tmp_path / "part", opts)
    assert whole.status == resumed.status == "done"
    from safetensors.torch import load_file

    a = load_file(str(whole_dir / ckfiles.T3_FILE))
    b = load_file(str(resumed_dir / ckfiles.T3_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert whole.eval == resumed.eval


def test_lora_merge_keeps_the_function(tiny_checkpoint, prepared):
    opts = T3TrainOptions(loop=LoopConfig(batch_size=2, **FAST), mode="lora", lora_rank=4)
    task, train_set, _ = build_task(tiny_checkpoint, prepared, opts)
    model = task.model.eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_(0, 0.02)  # as if trained: B starts at zero
        batch = collate([train_set[0], train_set[1]], model.cfg)
        before = forward_logits(model, batch)[1]
        from nutq.train.t3.adapters import merge_lora

        merge_lora(model)
        after = forward_logits(model, batch)[1]
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert (before - after).abs().max() < 1e-4


def test_eval_report_shows_the_tuned_model_beats_the_base(trained, tiny_checkpoint, prepared, tmp_path):
    rc = main(["eval", "t3", str(prepared), "--base", str(tiny_checkpoint), "--tuned", str(trained / "model"),
               "--out", str(tmp_path), "--samples", "1", "--max-tokens", "4"])
    assert rc == 0
    report = json.loads((tmp_path / "report.json").read_text())
    dialects = {ex.dialect for ex in PreparedDataset(prepared, "val")}
    assert set(report["delta"]) == {"all"} | dialects
    assert report["tuned"]["all"]["loss"] < report["base"]["all"]["loss"]
    assert report["delta"]["all"]["loss"] < 0
    page = (tmp_path / "samples" / "index.html").read_text()
    for row in report["samples"]:
        assert (tmp_path / "samples" / row["base"]).stat().st_size > 44 and row["tuned"] in page
    assert "| msa |" in (tmp_path / "report.md").read_text()


def test_bad_inputs_are_clear_errors(tiny_checkpoint, tmp_path, capsys):
    rc = main(["train", "t3", str(tmp_path / "nothing"), "--model-dir", str(tiny_checkpoint), "--out", str(tmp_path)])
    assert rc == 1 and "not a prepared dataset" in capsys.readouterr().err


@pytest.mark.refenv
def test_official_t3_loads_the_export_strictly(trained):
    py = refenv_python()
    if py is None:
        pytest.skip("reference env not built (bash tools/refenv/build.sh)")
    subprocess.run([py, str(REPO / "tools" / "parity" / "t3_load.py"), str(trained / "model" / ckfiles.T3_FILE),
                    "--size", "tiny"], check=True)
