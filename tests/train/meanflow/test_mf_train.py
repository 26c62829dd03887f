"""`nutq train meanflow` on the tiny teacher: it learns, resumes exactly, caches, exports strictly."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
import torch
from safetensors.torch import load_file

from mf_fixtures import prepared, teacher, train_set  # noqa: F401  (fixtures)
from nutq.checkpoints.files import MEANFLOW_FILE, resolve
from nutq.models.loading import read_state_dict
from nutq.models.registry import configs_from_sidecar, load_meanflow
from nutq.train.data.prepared import PreparedDataset
from nutq.train.loop import LoopConfig
from nutq.train.meanflow.cache import CacheError, TeacherCache
from nutq.train.meanflow.student import ESTIMATOR_PREFIX, MIXER_KEY
from nutq.engine.voice_format import model_fingerprint
from nutq.train.meanflow.inputs import batch_noise, collate, flow_inputs
from nutq.train.meanflow.teacher import teacher_path
from nutq.train.meanflow.trainer import DistillConfig, MeanflowTask, distil

LOOP = dict(batch_size=2, lr=1e-3, warmup_steps=2, progress=False, tensorboard=False)
CFG = DistillConfig(eval_examples=2, pairs_per_example=2)


def test_training_lowers_the_held_out_loss(tiny_checkpoint, prepared, teacher, tmp_path):
    val = PreparedDataset(prepared, "val")
    fresh = MeanflowTask(teacher, 8, val, CFG, seed=0)
    fresh.train(False)
    before = fresh.evaluate()
    s = distil(tiny_checkpoint, prepared, tmp_path, LoopConfig(max_steps=12, **LOOP), CFG)
    assert s["status"] == "done" and s["step"] == 12
    after = s["eval"]
    assert after["loss"] < 0.9 * before["loss"], (before, after)
    assert after["l1_2step"] < before["l1_2step"] and after["l1_1step"] < before["l1_1step"]
    assert (tmp_path / "logs" / "metrics.jsonl").read_text().count('"split": "train"') == 12


def test_interrupted_run_resumes_bit_for_bit(tiny_checkpoint, prepared, tmp_path):
    cfg = LoopConfig(max_steps=4, save_every=1, **LOOP)
    whole = distil(tiny_checkpoint, prepared, tmp_path / "whole", cfg, CFG)

    def interrupt(step, _metrics):
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal path: finish the step, save, stop

    part = distil(tiny_checkpoint, prepared, tmp_path / "part", cfg, CFG, on_step=interrupt)
    assert part["status"] == "interrupted" and part["step"] == 2 and "export" not in part
    resumed = distil(tiny_checkpoint, prepared, tmp_path / "part", cfg, CFG)
    assert resumed["status"] == "done" and resumed["steps_this_run"] == 2
    a = load_file(str(tmp_path / "whole" / MEANFLOW_FILE))
    b = load_file(str(tmp_path / "part" / MEANFLOW_FILE))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = torch.load(tmp_path / "whole" / "checkpoints" / "last.pt", weights_only=True)
    cb = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=True)
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    assert whole["eval"] == resumed["eval"]


def test_export_loads_strictly_and_holds_the_student(tiny_checkpoint, prepared, teacher, tmp_path):
    s = distil(tiny_checkpoint, prepared, tmp_path, LoopConfig(max_steps=2, **LOOP), CFG)
    cfg = configs_from_sidecar(resolve(tiny_checkpoint).sidecar)["s3gen"]
    student = load_meanflow(s["export"], cfg)  # strict: every key, shape and no extra
    assert student.meanflow
    exported = load_file(s["export"])
    ck = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)["model"]
    base = read_state_dict(resolve(tiny_checkpoint).s3gen)  # the teacher's file (loading folds HiFT's weight norm)
    for k, v in exported.items():
        if k.startswith(ESTIMATOR_PREFIX):
            assert torch.equal(v, ck["ema." + k[len(ESTIMATOR_PREFIX):]]), k  # the EMA weights by default
        else:
            assert torch.equal(v, base[k]), k  # encoder, CAMPPlus, HiFT, tokenizer: the teacher's
    assert MIXER_KEY in exported
    assert not torch.equal(exported[ESTIMATOR_PREFIX + "final_proj.weight"], base[ESTIMATOR_PREFIX + "final_proj.weight"])


def test_cached_teacher_trains_like_the_live_one(tiny_checkpoint, prepared, train_set, teacher, tmp_path):
    cfg = LoopConfig(max_steps=2, **LOOP)
    live = distil(tiny_checkpoint, prepared, tmp_path / "live", cfg, CFG)
    cached = distil(tiny_checkpoint, prepared, tmp_path / "cached", cfg, CFG, cache_dir=tmp_path / "cache")
    # Paths are batched differently (cache: index order; live: the shuffled order, other padding), so
    # they agree to float rounding, and so do the trained weights after a few Adam steps.
    a, b = load_file(live["export"]), load_file(cached["export"])
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-4, rtol=0)
    key0 = {"teacher": model_fingerprint(tiny_checkpoint), "data": train_set.meta["checkpoint"],
            "examples": len(train_set), "seed": 0, "draws": CFG.cache_draws, "teacher_steps": 10, "cfg_rate": 0.7}
    cache0 = TeacherCache(tmp_path / "cache", key0)
    batch = collate([train_set[i] for i in (5, 2)], [5, 2])
    fi = flow_inputs(teacher.flow, batch)
    live_path = teacher_path(teacher.flow.decoder.estimator, batch_noise(batch, 0, [1, 0], "cpu"), fi)
    torch.testing.assert_close(cache0.path(batch, [1, 0], live_path.grid, "cpu").states, live_path.states,
                               atol=1e-5, rtol=0)
    # Resumable by shard: a lost shard is rebuilt, the others are kept.
    key = {"teacher": "t", "data": "d", "examples": len(train_set), "seed": 0, "draws": 1, "teacher_steps": 10,
           "cfg_rate": 0.7}
    cache = TeacherCache(tmp_path / "c2", key, shard_size=3)
    assert cache.build(train_set, teacher.flow) == 3
    first = cache.shard_path(0).stat().st_mtime_ns
    cache.shard_path(1).unlink()
    assert TeacherCache(tmp_path / "c2", key).build(train_set, teacher.flow) == 1
    assert cache.shard_path(0).stat().st_mtime_ns == first
    with pytest.raises(CacheError, match="seed"):
        TeacherCache(tmp_path / "c2", {**key, "seed": 1})


def test_consistency_term_trains(tiny_checkpoint, prepared, tmp_path):
    s = distil(tiny_checkpoint, prepared, tmp_path, LoopConfig(max_steps=2, **LOOP),
               DistillConfig(eval_examples=1, pairs_per_example=2, consistency_weight=0.5))
    assert s["status"] == "done" and s["train"]["loss_consistency"] > 0
    assert s["train"]["loss"] > s["train"]["loss_interval"]


def test_wrong_data_is_refused(tiny_checkpoint, tmp_path):
    from nutq.checkpoints.make import make_checkpoint
    from nutq.train.data.errors import DataError
    from nutq.train.data.prepared import write_prepared_fixture

    other = make_checkpoint(tmp_path / "other", size="tiny", seed=5).root
    data = write_prepared_fixture(tmp_path / "d", checkpoint_dir=other, n_train=4, n_val=4, seed=0)
    with pytest.raises(DataError, match="prepared with checkpoint"):
        distil(tiny_checkpoint, data, tmp_path / "o", LoopConfig(max_steps=1, **LOOP), CFG)
    shutil.rmtree(tmp_path / "o", ignore_errors=True)


@pytest.mark.refenv
def test_official_turbo_s3gen_loads_the_export_strictly(tiny_checkpoint, prepared, tmp_path):
    """The official `S3Gen(meanflow=True).load_state_dict(..., strict=True)` takes the export, and its
    estimator computes what nutq's loading of the same file computes."""
    from conftest import run_generator

    s = distil(tiny_checkpoint, prepared, tmp_path / "run", LoopConfig(max_steps=1, **LOOP), CFG)
    g, _ = run_generator("meanflow_export.py", tmp_path / "official.safetensors", "--ckpt", str(tmp_path / "run"))
    cfg = configs_from_sidecar(resolve(tiny_checkpoint).sidecar)["s3gen"]
    est = load_meanflow(s["export"], cfg).flow.decoder.estimator
    with torch.inference_mode():
        ours = est(g["in.x"], g["in.mask"], g["in.mu"], g["in.t"], g["in.spks"], g["in.cond"], r=g["in.r"])
    torch.testing.assert_close(ours, g["out.est"], atol=1e-4, rtol=0)


def test_bf16_autocast_path_runs_with_an_fp32_teacher(tiny_checkpoint, prepared, tmp_path, monkeypatch):
    """The CUDA setting (student under bf16 autocast), exercised on CPU: the teacher still runs fp32."""
    import nutq.train.meanflow.trainer as trainer

    dtypes = []
    real = trainer.teacher_path

    def recording(*a):
        path = real(*a)
        dtypes.append(path.states.dtype)
        return path

    monkeypatch.setattr(trainer, "teacher_path", recording)
    s = distil(tiny_checkpoint, prepared, tmp_path, LoopConfig(max_steps=1, autocast="bf16", **LOOP), CFG)
    assert s["status"] == "done" and 0 < s["train"]["loss"] < float("inf")
    assert dtypes and set(dtypes) == {torch.float32}
