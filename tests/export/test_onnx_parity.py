"""ONNX export at tiny size: every graph run by onnxruntime equals the PyTorch path (fp32, 1e-4),
at batch sizes and lengths other than the ones traced, and the onnxruntime backend speaks."""

import numpy as np
import pytest
import torch

for _mod in ("onnx", "onnxscript", "onnxruntime"):
    pytest.importorskip(_mod, reason="the onnx extra (onnx, onnxscript, onnxruntime) is not installed")

from nutq.checkpoints.files import resolve  # noqa: E402
from nutq.engine.alignment import OFFICIAL  # noqa: E402
from nutq.engine.ort_backend import OnnxBackendError, OrtGraphs  # noqa: E402
from nutq.export.onnx import export_onnx  # noqa: E402
from nutq.models.registry import configs_from_sidecar, load_component, load_meanflow  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def export(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    export_onnx(resolve(tiny_checkpoint), out, optimize=False)
    return out


@pytest.fixture(scope="module")
def models(tiny_checkpoint):
    cfgs = configs_from_sidecar(resolve(tiny_checkpoint).sidecar)
    return (load_component(tiny_checkpoint, "t3", cfgs["t3"]), load_component(tiny_checkpoint, "s3gen", cfgs["s3gen"]),
            load_meanflow(tiny_checkpoint / "s3gen_meanflow.safetensors", cfgs["s3gen"]))


def close(a, b):
    a = torch.as_tensor(np.asarray(a)).float()
    assert a.shape == b.shape
    assert (a - b.float()).abs().max().item() <= TOL


def test_t3_prefill_and_decode_steps(export, models):
    t3 = models[0]
    g = OrtGraphs(export)
    probes = OFFICIAL.heads
    torch.manual_seed(1)
    emb = torch.randn(3, 13, t3.cfg.dim)  # batch and length other than traced
    with torch.inference_mode():
        cache = t3.new_cache(3, 16)
        h, attn = t3.forward_hidden(emb, 0, cache, probes=probes)
        hid, k, v, a = g.run("t3_prefill", emb)
        close(hid, h[:, -1]); close(a, attn); close(k, cache.k[:, :, :, :13]); close(v, cache.v[:, :, :, :13])
        for pos in (13, 14):  # two steps: the grown cache feeds the next one
            e = torch.randn(3, 1, t3.cfg.dim)
            h, attn = t3.forward_hidden(e, pos, cache, probes=probes)
            hid, k, v, a = g.run("t3_decode", e, k, v)
            close(hid, h[:, -1]); close(a, attn); close(k, cache.k[:, :, :, :pos + 1])


@pytest.mark.parametrize("kind", ["cfm", "meanflow"])
def test_estimators_with_padding(export, models, kind):
    s3gen = models[1] if kind == "cfm" else models[2]
    est = s3gen.flow.decoder.estimator
    torch.manual_seed(2)
    B, T = 3, 31
    mask = torch.ones(B, 1, T)
    mask[1, :, 20:] = 0
    args = [torch.randn(B, 80, T), mask, torch.randn(B, 80, T), torch.rand(B), torch.randn(B, 80), torch.randn(B, 80, T)]
    r = torch.rand(B) if kind == "meanflow" else None
    with torch.inference_mode():
        ref = est(*args, r=r, padded=True)
    out = OrtGraphs(export).run(f"estimator_{kind}", *args, *([r] if r is not None else []))[0]
    close(out, ref)


def test_flow_encoder_padded_rows(export, models):
    enc = models[1].flow.encoder
    torch.manual_seed(3)
    xs, lens = torch.randn(2, 11, enc.cfg.input_size), torch.tensor([11, 6])
    with torch.inference_mode():
        h, m = enc(xs, lens, isolate_rows=True)
    oh, om = OrtGraphs(export).run("flow_encoder", xs, lens)
    close(oh, h)
    assert np.array_equal(om, m.numpy())


def test_hift_f0_and_decode_match_torch_istft(export, models):
    hift = models[1].mel2wav
    torch.manual_seed(4)
    mel = torch.randn(2, 80, 9)
    with torch.inference_mode():
        f0 = hift.f0(mel)
        s = hift.source(f0, generator=torch.Generator().manual_seed(0))
        wav = hift.decode(mel, s)  # torch.stft / torch.istft
    g = OrtGraphs(export)
    close(g.run("hift_f0", mel)[0], f0)
    close(g.run("hift_decode", mel, s)[0], wav)


def test_onnxruntime_backend_speaks_like_torch(export, tiny_checkpoint):
    from nutq.tts import TTS

    files = resolve(tiny_checkpoint)
    kw = dict(seed=5, max_new_tokens=30, watermark=False)
    ref = TTS(files).synthesize("مرحبا بكم", **kw)
    out = TTS(files, backend="onnxruntime", onnx_dir=export).synthesize("مرحبا بكم", **kw)
    assert out.shape == ref.shape and len(out) > 0
    assert np.abs(out - ref).max() <= 1e-3  # same tokens, then flow + HiFT to float rounding


def test_backend_errors(tiny_checkpoint, tmp_path):
    from nutq.tts import TTS

    files = resolve(tiny_checkpoint)
    with pytest.raises(OnnxBackendError, match="nutq export onnx"):
        TTS(files, backend="onnxruntime", onnx_dir=tmp_path)
    with pytest.raises(ValueError, match="backend"):
        TTS(files, backend="tvm")
