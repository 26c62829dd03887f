"""nutq voice files: exact round trip, strict validation, no pickle, model identity."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save as st_save

from nutq.engine.voice import Voice, VoiceError, load_conds, save_conds
from nutq.engine.voice_format import (
    FORMAT, FORMAT_VERSION, NAMES, VoiceMeta, VoiceModelMismatch, dumps_voice, load_voice, load_voice_with_meta,
    loads_voice, model_fingerprint, read_voice_meta, save_voice, voice_nbytes,
)
from nutq.models.s3gen.model import RefDict

H = "ab" * 32  # a well-formed sha256 hex digest


def fake_voice(seed: int = 0, tt: int = 150, tp: int = 250, exaggeration: float = 0.5) -> Voice:
    g = torch.Generator().manual_seed(seed)
    return Voice(torch.randn(1, 256, generator=g), torch.randint(0, 6561, (1, tt), generator=g), exaggeration,
                 RefDict(torch.randint(0, 6561, (1, tp), generator=g), torch.tensor([tp]),
                         torch.randn(1, 2 * tp, 80, generator=g), torch.randn(1, 192, generator=g)))


def tensors_of(v: Voice) -> dict[str, torch.Tensor]:
    g = v.gen
    return dict(zip(NAMES, (v.speaker_emb, v.prompt_tokens, g.prompt_token, g.prompt_token_len, g.prompt_feat,
                            g.embedding)))


def assert_same_voice(a: Voice, b: Voice) -> None:
    for name, x in tensors_of(a).items():
        y = tensors_of(b)[name]
        assert x.dtype == y.dtype and torch.equal(x, y), f"{name} differs after the round trip"
    assert a.exaggeration == b.exaggeration


def craft(tensors: dict | None = None, meta: dict | None = None, **header) -> bytes:
    """A safetensors file shaped like a voice file, with chosen parts broken."""
    t = {k: v.contiguous() for k, v in (tensors or tensors_of(fake_voice())).items()}
    md = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
          "meta": json.dumps({"exaggeration": 0.5, **(meta or {})}), **header}
    return st_save(t, metadata=md)


def test_round_trip_is_exact_with_metadata(tmp_path):
    v = fake_voice(1, tt=63, tp=62, exaggeration=0.7)
    meta = VoiceMeta(model="ckpt-x", clip_sha256=H, clip_sample_rate=16000, clip_seconds=2.5, created=123.0)
    save_voice(v, tmp_path / "a.voice", meta=meta)
    back, m = load_voice_with_meta(tmp_path / "a.voice", model="ckpt-x")
    assert_same_voice(v, back)
    assert m == replace(meta, nutq_version=m.nutq_version) and m.nutq_version
    assert read_voice_meta(tmp_path / "a.voice") == (0.7, m)
    assert list(tmp_path.iterdir()) == [tmp_path / "a.voice"]  # the atomic write leaves no temp file


def test_official_conds_converts_exactly(tmp_path):
    v = fake_voice(2)
    save_conds(v, tmp_path / "conds.pt")
    official = load_conds(tmp_path / "conds.pt")
    save_voice(official, tmp_path / "v.voice")
    assert_same_voice(official, load_voice(tmp_path / "v.voice"))
    assert voice_nbytes(official) == 256 * 4 + 150 * 8 + 250 * 8 + 8 + 500 * 80 * 4 + 192 * 4


def test_other_dtypes_are_stored_canonically():
    v = fake_voice(3)
    odd = Voice(v.speaker_emb.half(), v.prompt_tokens.int(), 0.5, replace(v.gen, prompt_feat=v.gen.prompt_feat.double()))
    back, _ = loads_voice(dumps_voice(odd))
    assert back.speaker_emb.dtype == torch.float32 and back.prompt_tokens.dtype == torch.int64
    assert torch.equal(back.prompt_tokens, v.prompt_tokens)
    assert torch.equal(back.gen.prompt_feat, v.gen.prompt_feat.double().float())


def test_official_one_extra_mel_frame_is_accepted():
    t = tensors_of(fake_voice(4, tp=100))
    t["gen.prompt_feat"] = torch.randn(1, 201, 80)
    loads_voice(craft(t))


def _broken(**changes):
    t = tensors_of(fake_voice())
    t.update(changes)
    return craft({k: v for k, v in t.items() if v is not None})


GOOD = dumps_voice(fake_voice())


@pytest.mark.parametrize("data, msg", [
    (b"", "only 0 bytes"),
    (GOOD[:5], "only 5 bytes"),
    (GOOD[:200], "truncated"),
    (GOOD[:-10], "truncated"),
    (GOOD + b"\0" * 8, "trailing"),
    (b"\xff" * 1000, "header length"),
    (pickle.dumps({"t3": 1}), "pickle"),
    (st_save({"x": torch.zeros(2)}), "not a nutq voice"),
    (craft(format_version="2"), "newer nutq"),
    (craft(format_version="zero"), "format_version"),
    (craft(meta={"exaggeration": "loud"}), "exaggeration"),
    (craft(meta={"clip_sha256": "../etc"}), "clip_sha256"),
    (craft(meta={"clip_sample_rate": -5}), "clip_sample_rate"),
    (_broken(**{"gen.prompt_feat": torch.full((1, 500, 80), float("nan"))}), "NaN"),
    (_broken(speaker_emb=torch.randn(1, 255)), "shape"),
    (_broken(speaker_emb=torch.randn(1, 256, dtype=torch.float64)), "dtype"),
    (_broken(**{"gen.embedding": None}), "names"),
    (_broken(extra=torch.zeros(1)), "names"),
    (_broken(prompt_tokens=torch.full((1, 150), 6561)), "codebook"),
    (_broken(prompt_tokens=torch.zeros(1, 151, dtype=torch.long)), "T3 prompt tokens"),
    (_broken(**{"gen.prompt_token_len": torch.tensor([249])}), "prompt_token_len"),
    (_broken(**{"gen.prompt_feat": torch.randn(1, 498, 80)}), "frames"),
])
def test_bad_voice_data_is_a_clear_voice_error(data, msg):
    with pytest.raises(VoiceError, match=msg):
        loads_voice(data)


def test_bad_paths_are_voice_errors(tmp_path):
    v = fake_voice()
    save_conds(v, tmp_path / "conds.pt")
    with pytest.raises(VoiceError, match="torch zip/pickle file.*load_conds"):
        load_voice(tmp_path / "conds.pt")
    with pytest.raises(VoiceError, match="not found"):
        load_voice(tmp_path / "missing.voice")
    with pytest.raises(VoiceError, match="directory"):
        load_voice(tmp_path)
    big = tmp_path / "big.voice"
    big.write_bytes(b"\0" * (5 * 1024 * 1024))
    with pytest.raises(VoiceError, match="at most"):
        load_voice(big)
    cut = tmp_path / "cut.voice"
    cut.write_bytes(dumps_voice(v)[:-1])
    with pytest.raises(VoiceError, match="truncated"):
        read_voice_meta(cut)  # the header-only check sees the length mismatch too


def test_unsavable_voices_are_refused():
    v = fake_voice()
    with pytest.raises(VoiceError, match="finite"):
        dumps_voice(v.with_exaggeration(float("inf")))
    with pytest.raises(VoiceError, match="expected integer"):
        dumps_voice(Voice(v.speaker_emb, v.prompt_tokens.float(), 0.5, v.gen))
    with pytest.raises(VoiceError, match="NaN"):
        dumps_voice(Voice(v.speaker_emb * float("nan"), v.prompt_tokens, 0.5, v.gen))


def test_a_voice_from_another_model_is_refused():
    data = dumps_voice(fake_voice(), VoiceMeta(model="ckpt-a"))
    loads_voice(data, model="ckpt-a")
    loads_voice(data)  # the caller did not say which model it runs
    with pytest.raises(VoiceModelMismatch, match="ckpt-a.*ckpt-b"):
        loads_voice(data, model="ckpt-b")
    loads_voice(dumps_voice(fake_voice()), model="ckpt-b")  # a file that records no model is accepted


def test_loading_never_unpickles(monkeypatch):
    data = dumps_voice(fake_voice())

    def forbidden(*a, **k):
        raise AssertionError("a voice file must load without pickle")

    for mod, name in ((pickle, "loads"), (pickle, "load"), (pickle, "Unpickler"), (torch, "load")):
        monkeypatch.setattr(mod, name, forbidden)
    assert_same_voice(loads_voice(data)[0], fake_voice())


def _fake_checkpoint(root, ve_value: float):
    root.mkdir(exist_ok=True)
    torch.save({"w": torch.full((4,), ve_value)}, root / "ve.pt")
    torch.save({"w": torch.ones(3)}, root / "s3gen.pt")
    return root


def test_model_fingerprint_follows_the_weights_not_the_save(tmp_path):
    a = model_fingerprint(_fake_checkpoint(tmp_path / "a", 1.0))
    assert a == model_fingerprint(tmp_path / "a")
    # torch.save writes a random serialization id; the same weights saved again keep the fingerprint
    assert model_fingerprint(_fake_checkpoint(tmp_path / "b", 1.0)) == a
    assert model_fingerprint(_fake_checkpoint(tmp_path / "c", 2.0)) != a
    (tmp_path / "a" / "nutq.json").write_text('{"size": "tiny"}')
    assert model_fingerprint(tmp_path / "a") != a
