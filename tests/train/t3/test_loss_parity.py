"""The T3 training forward and losses equal the official chatterbox-tts 0.1.7 (random weights, fp32).

Fixture: tests/golden/t3_loss.safetensors from tools/parity/t3_loss.py: the official `T3.loss()`
(with its class-dimension crash fixed, see nutq.train.t3.loss) and next-token CE over the official
`T3.forward` logits, on a padded 3-row batch, plus gradients of a few parameters. Tolerances:
losses 1e-5 absolute, logsumexps 1e-4, gradients 1e-4 relative to each gradient's max magnitude
(same fp32 math; only kernel summation order differs). Both sides in eval mode: the official
Perceiver's train-mode attention dropout cannot be drawn alike (see tools/parity/t3_loss.py).
"""

from __future__ import annotations

import pytest
import torch

from conftest import load_golden, run_generator
from nutq.models.random_init import randomize_module
from nutq.models.t3 import T3, T3_FULL, T3_TINY
from nutq.train.t3.loss import T3Batch, forward_logits, t3_losses


def batch_of(g) -> T3Batch:
    return T3Batch(text=g["in.text"], text_lens=g["in.text_lens"], speech=g["in.speech"],
                   speech_lens=g["in.speech_lens"], speaker=g["in.speaker"], prompt=g["in.prompt"],
                   emotion=g["in.emotion"])


def check(model: T3, g: dict, meta: dict):
    assert meta["official_loss_as_shipped"].startswith("RuntimeError: Expected target size")
    batch = batch_of(g)
    with torch.no_grad():
        text_logits, speech_logits = forward_logits(model, batch)
    assert (text_logits.logsumexp(-1) - g["out.text_lse"]).abs().max() <= 1e-4
    assert (speech_logits.logsumexp(-1) - g["out.speech_lse"]).abs().max() <= 1e-4
    params = dict(model.named_parameters())
    for objective in ("official", "next"):
        model.zero_grad()
        losses = t3_losses(model, batch, objective)
        assert abs(float(losses.text) - float(g[f"out.{objective}.text"])) <= 1e-5, objective
        assert abs(float(losses.speech) - float(g[f"out.{objective}.speech"])) <= 1e-5, objective
        (losses.text + losses.speech).backward()
        for name in meta["params"] + meta["row_params"]:
            ref = g[f"grad.{objective}.{name}"]
            ours = params[name].grad
            if name in meta["row_params"]:
                ours = ours[g[f"rows.{name}"]]
            assert ref.abs().max() > 0, name  # the gradient reaches this parameter at all
            err = (ours - ref).abs().max() / ref.abs().max()
            assert err <= 1e-4, f"{objective} {name}: relative grad error {float(err):.2e}"


def test_t3_loss_tiny_matches_official():
    g, meta = load_golden("t3_loss")
    assert meta["size"] == "tiny"
    check(randomize_module(T3(T3_TINY), meta["seed"]).eval(), g, meta)


def test_objectives_differ_and_masks_ignore_padding():
    g, meta = load_golden("t3_loss")
    model = randomize_module(T3(T3_TINY), meta["seed"])
    batch = batch_of(g)
    with torch.no_grad():
        a = t3_losses(model, batch, "next")
        assert float(a.text) != float(t3_losses(model, batch, "official").text)
        # Changing a pad token of the speech segment's tail changes nothing scored: only tokens
        # after every scored position of that row were touched.
        row = int(batch.speech_lens.argmin())
        speech = batch.speech.clone()
        speech[row, batch.speech_lens[row]:] = 17
        b = t3_losses(model, T3Batch(**{**batch.__dict__, "speech": speech}), "next")
    assert torch.equal(a.speech_sum, b.speech_sum) and torch.equal(a.speech_count, b.speech_count)
    # next: each row scores n-1 speech tokens (BOS predicts the first code, the last predicts EOS).
    assert a.speech_count.tolist() == (batch.speech_lens - 1).tolist()


@pytest.mark.slow
@pytest.mark.refenv
def test_t3_loss_full_size_matches_official(tmp_path):
    g, meta = run_generator("t3_loss.py", tmp_path / "t3_loss_full.safetensors", "--size", "full",
                            "--prompt-len", "150")
    check(randomize_module(T3(T3_FULL), meta["seed"]).eval(), g, meta)
