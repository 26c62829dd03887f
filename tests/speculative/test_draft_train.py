"""`nutq train draft` on the prepared fixture: the trained draft beats the untrained shortcut (the
target's first layers) on held-out acceptance, the file it writes loads strictly, and bad files
fail with clear errors."""

from __future__ import annotations

import pytest
import torch

from nutq.engine.draft import DraftConfig, DraftT3, load_draft, save_draft
from nutq.errors import WeightLoadError

from .conftest import random_draft


@pytest.fixture(scope="module")
def trained(tiny_checkpoint, tmp_path_factory):
    from nutq.train.data.prepared import write_prepared_fixture
    from nutq.train.draft.cli import train_draft

    root = tmp_path_factory.mktemp("draft")
    data = write_prepared_fixture(root / "prepared", checkpoint_dir=tiny_checkpoint, n_train=8, n_val=4)
    report = train_draft(tiny_checkpoint, data, root / "run", layers=2, steps=30, batch_size=2, lr=2e-3,
                         warmup=3, max_speech=48, save=root / "draft.safetensors", progress=False)
    return report, tiny_checkpoint


def test_trained_draft_beats_shortcut(trained):
    report, _ = trained
    before, after = report["before"], report["after"]
    assert after["loss"] < 0.97 * before["loss"]  # measured: 2.73 -> 2.50 KL
    assert after["acceptance"] > before["acceptance"]


def test_saved_draft_loads_and_rejects_other_targets(trained):
    from nutq.models.registry import configs_from_sidecar, load_component
    from nutq.checkpoints import files as ckfiles

    report, ckpt = trained
    files = ckfiles.resolve(ckpt, allow_download=False)
    t3 = load_component(files.root, "t3", configs_from_sidecar(files.sidecar)["t3"]).eval()
    draft = load_draft(report["draft"], t3)
    assert draft.llama.num_layers == 2
    shortcut = DraftT3(t3, DraftConfig(2))  # what training started from: the file holds trained weights
    assert not torch.equal(draft.tfmr.layers[0].mlp.up_proj.weight, shortcut.tfmr.layers[0].mlp.up_proj.weight)
    other = load_component(files.root, "t3", configs_from_sidecar(files.sidecar)["t3"]).eval()
    with torch.no_grad():
        other.speech_head.weight.add_(1.0)
    with pytest.raises(WeightLoadError, match="other T3 weights"):
        load_draft(report["draft"], other)


def test_bad_draft_files(t3, tmp_path):
    with pytest.raises(WeightLoadError, match="no draft file"):
        load_draft(tmp_path / "missing.safetensors", t3)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightLoadError, match="not a readable"):
        load_draft(junk, t3)
    from safetensors.torch import save_file

    good = save_draft(random_draft(t3, 2, 1), tmp_path / "d.safetensors")
    assert torch.equal(load_draft(good, t3).tfmr.norm.weight, random_draft(t3, 2, 1).tfmr.norm.weight)
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors.pop("tfmr.norm.weight")
    save_file(tensors, str(tmp_path / "short.safetensors"), metadata=meta)
    with pytest.raises(WeightLoadError, match="missing"):
        load_draft(tmp_path / "short.safetensors", t3)
    save_file({"x": torch.zeros(1)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(WeightLoadError, match="not a nutq T3 draft"):
        load_draft(tmp_path / "foreign.safetensors", t3)


def test_a_corpus_without_validation_examples_is_refused_before_training(tiny_checkpoint, tmp_path):
    """The run's report compares the shortcut and the trained draft on held-out examples: a prepared
    set whose validation split is empty (one speaker per dialect, or --val-fraction 0) is a clear
    DataError up front, with no run directory or draft file written."""
    import json

    from nutq.train.data.errors import DataError
    from nutq.train.data.prepared import INDEX_FILE, write_prepared_fixture
    from nutq.train.draft.cli import train_draft

    data = write_prepared_fixture(tmp_path / "prepared", checkpoint_dir=tiny_checkpoint, n_train=4, n_val=2,
                                  speakers=1)
    index = data / INDEX_FILE
    meta = json.loads(index.read_text())
    meta["splits"]["val"]["shards"] = []
    index.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="no validation examples"):
        train_draft(tiny_checkpoint, data, tmp_path / "run", steps=2, save=tmp_path / "draft.safetensors",
                    progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "draft.safetensors").exists()


@pytest.mark.parametrize("precision", ["bf16", "fp16", "int8", "int4"])
def test_a_draft_trained_in_fp32_is_accepted_by_the_same_t3_in_another_precision(trained, precision):
    """Training runs in fp32 (on a CPU); serving runs T3 in bf16 on a GPU, or quantized. The draft
    file's target check must take the same weights in any of those, and still refuse another
    model (an exact hash of the values refused every cast)."""
    import copy

    from nutq.checkpoints import files as ckfiles
    from nutq.models.registry import configs_from_sidecar, load_component

    report, ckpt = trained
    files = ckfiles.resolve(ckpt, allow_download=False)
    cfg = configs_from_sidecar(files.sidecar)["t3"]
    t3 = load_component(files.root, "t3", cfg).eval()
    if precision in ("bf16", "fp16"):
        served = copy.deepcopy(t3).to(torch.bfloat16 if precision == "bf16" else torch.float16)
    else:
        pytest.importorskip("torchao")
        from nutq.models.quant import quantize_t3

        served = quantize_t3(copy.deepcopy(t3), precision)
    assert isinstance(load_draft(report["draft"], served), DraftT3)
    torch.manual_seed(123)
    other = type(t3)(cfg).to(served.speech_head.weight.dtype if precision in ("bf16", "fp16") else torch.float32)
    with pytest.raises(WeightLoadError, match="other T3 weights: .* differs by"):
        load_draft(report["draft"], other)


def test_a_version_1_draft_is_refused_with_a_way_out(t3, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    good = save_draft(random_draft(t3, 2, 1), tmp_path / "d.safetensors")
    with safe_open(str(good), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(tmp_path / "v1.safetensors"), metadata={**meta, "version": "1"})
    with pytest.raises(WeightLoadError, match="version '1'.*retrain"):
        load_draft(tmp_path / "v1.safetensors", t3)


def test_training_on_the_targets_own_generations(tiny_checkpoint, tmp_path, monkeypatch):
    """--generated K: K target samples per training utterance join the corpus, the report adds
    held-out acceptance on the target's generations (what decoding sees) and the trained draft beats
    the shortcut there; the samples are seeded and cached, so a resumed run reuses them."""
    from nutq.train.data.prepared import PreparedDataset, write_prepared_fixture
    from nutq.train.draft import generated as gen_mod
    from nutq.train.draft.cli import train_draft

    data = write_prepared_fixture(tmp_path / "prepared", checkpoint_dir=tiny_checkpoint, n_train=8, n_val=4)
    kw = dict(layers=2, batch_size=2, lr=2e-3, warmup=3, max_speech=24, progress=False, generated=2)
    report = train_draft(tiny_checkpoint, data, tmp_path / "run", steps=20, save=tmp_path / "d.safetensors", **kw)
    before, after = report["before"], report["after"]
    assert after["generated_loss"] < before["generated_loss"]
    assert after["generated_acceptance"] > before["generated_acceptance"]
    saved = torch.load(tmp_path / "run" / "generated_train.pt", weights_only=True)
    train = PreparedDataset(data, "train")
    assert sorted({i for i, _ in saved["items"]}) == list(range(len(train))) and len(saved["items"]) == 2 * len(train)
    assert all(0 < len(tok) <= 24 and not torch.equal(tok[:5], train[i].speech_tokens[:5]) for i, tok in saved["items"])

    # the same seed samples the same sequences; a resumed run reads the cache instead of sampling
    from nutq.checkpoints import files as ckfiles
    from nutq.engine.sampling import SamplingParams
    from nutq.models.registry import configs_from_sidecar, load_component

    files = ckfiles.resolve(tiny_checkpoint, allow_download=False)
    t3 = load_component(files.root, "t3", configs_from_sidecar(files.sidecar)["t3"]).eval()
    again = gen_mod.generated_examples(t3, train, 2, 24, SamplingParams(), seed=0, cache=tmp_path / "again.pt",
                                       source="x", progress=False)
    assert all(torch.equal(ex.speech_tokens, tok) for ex, (_, tok) in zip(again, saved["items"]))

    def no_sampling(*a, **k):
        raise AssertionError("sampled again instead of reading the cache")

    monkeypatch.setattr(gen_mod, "iter_speech_tokens", no_sampling)
    resumed = train_draft(tiny_checkpoint, data, tmp_path / "run", steps=20, save=tmp_path / "d.safetensors", **kw)
    assert resumed["status"] == "done" and resumed["steps"] == 20 and resumed["after"] == after
