"""Weight-only int8/int4 T3 (torchao): close to fp32, saved and loaded strictly, spoken by TTS."""

import dataclasses

import pytest
import torch

pytest.importorskip("torchao", reason="the quant extra (torchao) is not installed")

from nutq.checkpoints.files import resolve  # noqa: E402
from nutq.errors import WeightLoadError  # noqa: E402
from nutq.models.quant import load_quantized, load_t3, quantize_t3, quantized_path, save_quantized, source_signature  # noqa: E402
from nutq.models.registry import configs_from_sidecar  # noqa: E402


@pytest.fixture(scope="module")
def cfg(tiny_checkpoint):
    return configs_from_sidecar(resolve(tiny_checkpoint).sidecar)["t3"]


def logits(t3, seed=0):
    torch.manual_seed(seed)
    emb = torch.randn(2, 12, t3.cfg.dim)
    with torch.inference_mode():
        return t3.speech_logits(t3.forward_hidden(emb, 0, t3.new_cache(2, 16))[:, -1]).float()


@pytest.mark.parametrize("scheme,rel", [("int8", 0.05), ("int4", 0.4)])
def test_quantized_logits_close_to_fp32(tiny_checkpoint, cfg, scheme, rel):
    ref = logits(load_t3(tiny_checkpoint, cfg, "fp32"))
    q = load_t3(tiny_checkpoint, cfg, scheme)
    w = q.tfmr.layers[0].mlp.gate_proj.weight if hasattr(q.tfmr.layers[0].mlp, "gate_proj") else q.speech_head.weight
    assert type(w).__name__ != "Parameter" and "Tensor" in type(w).__name__  # a torchao subclass
    assert type(q.speech_emb.weight) is torch.nn.Parameter  # embeddings stay float
    out = logits(q)
    err = ((out - ref).norm() / ref.norm()).item()
    assert 0 < err < rel  # quantized (not a no-op) but close


def test_int8_is_per_channel_symmetric_weight_only():
    """torchao's int8 equals a hand dequantisation: round(w / s) * s with s = max|w_row| / 127."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 32, bias=False)
    w = lin.weight.detach().clone()
    q = quantize_t3(torch.nn.Module(), "int8")  # nothing to quantize: a no-op that still works
    assert q.quantization == "int8"
    holder = torch.nn.Module()
    holder.tfmr = torch.nn.Sequential(lin)
    quantize_t3(holder, "int8")
    qw = holder.tfmr[0].weight
    s = qw.scale.reshape(-1, 1)
    assert torch.allclose(s, w.abs().amax(1, keepdim=True) / 127, rtol=1e-2)  # one scale per output row
    assert qw.qdata.dtype == torch.int8 and ((qw.qdata.float() * s - w).abs() <= s / 2 + 1e-7).all()
    x = torch.randn(5, 64)
    with torch.inference_mode():
        assert torch.allclose(holder.tfmr[0](x), x @ (qw.qdata.float() * s).T, atol=1e-5)


def test_save_load_roundtrip_and_strictness(tiny_checkpoint, cfg, tmp_path):
    t3 = quantize_t3(load_t3(tiny_checkpoint, cfg, "fp32"), "int8")
    src = source_signature(resolve(tiny_checkpoint).t3)
    path = save_quantized(t3, tmp_path / "t3_int8.pt", src)
    back = load_quantized(path, cfg, "int8", source=src)
    assert torch.equal(logits(back), logits(t3))
    with pytest.raises(WeightLoadError, match="int8 weights, int4"):
        load_quantized(path, cfg, "int4")
    with pytest.raises(WeightLoadError, match="another T3 config"):
        load_quantized(path, dataclasses.replace(cfg, prompt_len=10), "int8")
    with pytest.raises(WeightLoadError, match="another T3 file"):
        load_quantized(path, cfg, "int8", source={**src, "size": 1})
    (tmp_path / "bad.pt").write_bytes(b"not a zip")
    with pytest.raises(WeightLoadError, match="not a readable"):
        load_quantized(tmp_path / "bad.pt", cfg, "int8")


def test_tts_int8_uses_saved_file_and_warns_unmeasured(tiny_checkpoint, tmp_path):
    import shutil

    from nutq.tts import TTS

    ck = tmp_path / "ck"
    shutil.copytree(tiny_checkpoint, ck)
    files = resolve(ck)
    cfg = configs_from_sidecar(files.sidecar)["t3"]
    save_quantized(quantize_t3(load_t3(ck, cfg, "fp32"), "int8"), quantized_path(ck, "int8"), source_signature(files.t3))
    tts = TTS(files, dtype="int8")
    assert tts.t3.quantization == "int8"
    assert any("not measured" in w for w in tts.precision_warnings)
    wav = tts.synthesize("مرحبا", seed=1, max_new_tokens=10, watermark=False)
    assert len(wav) > 0
