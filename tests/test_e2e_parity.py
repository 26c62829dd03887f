"""`TTS.synthesize` equals the official `ChatterboxMultilingualTTS.generate` with the same speech tokens.

Fixture: tests/golden/e2e.safetensors from tools/parity/e2e.py: the official `from_local` + `generate`
(chatterbox-tts 0.1.7, unchanged) on nutq's tiny random checkpoint `make_checkpoint(seed)`, with
- T3's sampling replaced by fixed tokens on both sides (official: `t3.inference` returns them + EOS;
  nutq: the real T3 decode loop replays them through `forced_tokens`), so everything after T3 is
  compared: invalid-id dropping, S3Gen flow with CFG, HiFT, trim fade;
- the same randomness: the official runs after `torch.manual_seed(n)`, nutq's `synthesize(seed=n)`
  seeds its CPU generator with n; neither draws anything before the flow noise, then HiFT's source;
- no watermark: the official waveform is recorded before Perth, nutq runs with `watermark=False`;
- the HiFT `conv_post` adjustment of tools/parity/hift.py on both sides (realistic amplitudes).
The text ids T3 receives are compared too (official `punc_norm` + tokenizer vs nutq `text_ids`
without the Arabic frontend).

Tolerance 1e-4 max abs on the waveform (the parity bound used for HiFT's waveform; observed tiny 0.0).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import adjust_conv_post, load_golden, run_generator
from nutq.checkpoints.make import make_checkpoint
from nutq.engine import generate
from nutq.tts import TTS

TOL = 1e-4


def adjusted_tts(root, meta: dict) -> TTS:
    tts = TTS.from_local(root)
    adjust_conv_post(tts.s3gen.mel2wav, meta["conv_post_adjust"])
    return tts


def synthesize_forced(tts: TTS, tokens: list[int], meta: dict, monkeypatch) -> np.ndarray:
    seen = {}

    def forced(t3, cond, text_ids, params, **kw):
        seen["text_ids"] = text_ids
        params = replace(params, max_new_tokens=len(tokens))
        return generate.generate_speech_tokens(t3, cond, text_ids, params, **kw, forced_tokens=tokens)

    monkeypatch.setattr("nutq.engine.engine.generate_speech_tokens", forced)
    wav = tts.synthesize(meta["text"], "ar", seed=meta["rng_seed"], exaggeration=meta["exaggeration"],
                         normalize=False, watermark=False)
    return wav, seen["text_ids"]


def check(tts: TTS, g: dict, meta: dict, monkeypatch) -> float:
    # The official T3 returns its tokens followed by EOS; nutq's forced loop must stop on that EOS
    # and hand S3Gen only the valid ids.
    tokens = [*g["in.tokens"].tolist(), tts.t3.cfg.stop_speech]
    wav, text_ids = synthesize_forced(tts, tokens, meta, monkeypatch)
    assert torch.equal(text_ids.cpu(), g["out.text_ids"]), "text ids given to T3 differ from the official"
    ref = g["out.wav"].numpy()
    assert wav.shape == ref.shape == (960 * len(g["in.tokens"]),)
    err = float(np.abs(wav - ref).max())
    assert err <= TOL, f"waveform differs from the official by {err:.3g} (> {TOL})"
    return err


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    g, meta = load_golden("e2e")
    root = make_checkpoint(tmp_path_factory.mktemp("e2e"), size="tiny", seed=meta["seed"]).root
    return adjusted_tts(root, meta), g, meta


def test_synthesize_matches_official_generate(tiny, monkeypatch):
    check(*tiny, monkeypatch)


def test_the_fixture_is_speech_like_and_seed_sensitive(tiny, monkeypatch):
    """A clamped or silent reference would make equality cheap; another seed must change the output."""
    tts, g, meta = tiny
    ref = g["out.wav"].numpy()
    assert 0.001 < ref.std() < 0.5 and (np.abs(ref) >= 0.99).mean() < 0.01
    other = dict(meta, rng_seed=meta["rng_seed"] + 1)
    wav, _ = synthesize_forced(tts, [*g["in.tokens"].tolist(), tts.t3.cfg.stop_speech], other, monkeypatch)
    assert np.abs(wav - ref).max() > 100 * TOL  # observed 0.018


@pytest.mark.slow
@pytest.mark.refenv
def test_synthesize_matches_official_generate_full_size(tmp_path, monkeypatch):
    root = make_checkpoint(tmp_path / "ckpt", size="full", seed=0).root
    out = tmp_path / "e2e_full.safetensors"
    g, meta = run_generator("e2e.py", out, "--size", "full", "--ckpt", str(root))
    err = check(adjusted_tts(root, meta), g, meta, monkeypatch)
    print(f"full-size end-to-end max abs waveform difference: {err:.3g}")
