"""CAMPPlus equals the official chatterbox-tts 0.1.7 x-vector encoder (random weights, fp32, eval).

Fixture: tests/golden/campplus.safetensors from tools/parity/campplus.py (official `inference()` =
Kaldi fbank + mean removal + forward, and `forward()` on raw features, plus the frame-level
activations before pooling). Tolerance 1e-4 max abs on x-vectors and frame features (the
project's parity bound for features; both sides run the same fp32 ops in the same order: observed 0.0 for tiny and full).
"""

from __future__ import annotations

import pytest
import torch

from conftest import load_golden, run_generator
from nutq.models.random_init import randomize_module
from nutq.models.s3gen.campplus import CAMPPLUS_FULL, CAMPPLUS_TINY, CAMPPlus

TOL = 1e-4


def build(cfg, seed: int) -> CAMPPlus:
    return randomize_module(CAMPPlus(cfg), seed).eval()


def check(model: CAMPPlus, g: dict) -> None:
    with torch.inference_mode():
        xvec = model.embed(g["in.wav"])
        assert xvec.shape == g["out.xvector"].shape == (1, 192)
        assert (xvec - g["out.xvector"]).abs().max() <= TOL
        batch = model.embed(g["in.wav_batch"])
        assert batch.shape == (2, 192)
        assert (batch - g["out.xvector_batch"]).abs().max() <= TOL
        feats = g["in.feats"]
        assert (model(feats) - g["out.xvector_feats"]).abs().max() <= TOL
        frames = model.xvector.frame_features(model.head(feats.transpose(1, 2)))
        assert frames.shape == g["out.frames_feats"].shape
        assert (frames - g["out.frames_feats"]).abs().max() <= TOL
    # The references must depend on their inputs by much more than TOL, or the checks prove little.
    # With random weights the time-pooled x-vector is nearly input-independent (rows differ by
    # ~7e-3), hence the frame-level comparison, where rows differ by ~0.2.
    assert (g["out.xvector_batch"][0] - g["out.xvector_batch"][1]).abs().max() > 10 * TOL
    assert (g["out.frames_feats"][0] - g["out.frames_feats"][1]).abs().max() > 1e-2


@pytest.fixture(scope="module")
def tiny():
    g, meta = load_golden("campplus")
    assert meta["size"] == "tiny"
    return build(CAMPPLUS_TINY, meta["seed"]), g


def test_campplus_tiny_matches_official(tiny):
    model, g = tiny
    check(model, g)


def test_full_statedict_matches_official_listing(statedict_listing):
    with torch.device("meta"):
        model = CAMPPlus(CAMPPLUS_FULL)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == statedict_listing("s3gen_campplus_speaker_encoder.txt", "speaker_encoder.")
    assert model.state_dict()["xvector.dense.nonlinear.batchnorm.num_batches_tracked"].dtype == torch.int64


def test_batchnorm_uses_running_stats_even_in_train_mode(tiny):
    model, g = tiny
    feats = g["in.feats"]
    with torch.no_grad():
        expected = model(feats)
        model.train()
        try:
            got = model(feats)
        finally:
            model.eval()
    assert torch.equal(got, expected)
    assert torch.equal(model.head.bn1.running_mean, build(CAMPPLUS_TINY, 1234).head.bn1.running_mean)


def test_embed_subtracts_the_utterance_mean(tiny):
    model, g = tiny
    wav = g["in.wav"]
    # a constant shift of every log energy (scaling the audio) must cancel after mean removal
    with torch.inference_mode():
        assert (model.embed(wav * 2.0) - model.embed(wav)).abs().max() < 1e-4


def test_too_short_audio_is_a_clear_error(tiny):
    model, _ = tiny
    assert model.embed(torch.randn(720)).shape == (1, 192)  # 3 fbank frames: the minimum
    with pytest.raises(ValueError, match="at least 3 fbank frames"):
        model.embed(torch.randn(719))
    with pytest.raises(ValueError, match="shorter than one fbank frame"):
        model.embed(torch.randn(300))
    with pytest.raises(ValueError, match=r"\(B, T, 80\)"):
        model(torch.randn(1, 80, 100))


@pytest.mark.slow
@pytest.mark.refenv
def test_campplus_full_matches_official_live(tmp_path):
    out = tmp_path / "campplus.safetensors"
    run_generator("campplus.py", out, "--size", "full")
    from safetensors.torch import load_file

    g = load_file(str(out))
    check(build(CAMPPLUS_FULL, 1234), g)
