"""TensorRT build script: argument handling everywhere; building and running only on a GPU."""

import json

import pytest

from nutq.cli import build_parser
from nutq.engine.ort_backend import MANIFEST
from nutq.errors import NutqError
from nutq.export.tensorrt import build_engines, profile_shapes

MANIFEST_T = {"t3": {"layers": 2, "kv_heads": 4, "head_dim": 8, "hidden": 32}, "samples_per_frame": 480,
              "graphs": {"t3_decode": {"file": "t3_decode.onnx"}, "hift_decode": {"file": "hift_decode.onnx"}}}


def test_cli_arguments():
    args = build_parser().parse_args(["export", "tensorrt", "d", "--precision", "bf16", "--max-batch", "4"])
    assert (args.onnx_dir, args.precision, args.max_batch, args.max_frames) == ("d", "bf16", 4, 2000)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["export", "tensorrt", "d", "--precision", "int8"])


def test_profiles_cover_min_to_max():
    kv = profile_shapes("t3_decode", MANIFEST_T, max_batch=4, max_frames=100, max_len=64)["past_k"]
    assert kv[0] == (2, 1, 4, 1, 8) and kv[2] == (2, 4, 4, 63, 8)
    src = profile_shapes("hift_decode", MANIFEST_T, max_batch=4, max_frames=100, max_len=64)["source"]
    assert src[0] == (1, 1, 960) and src[2] == (4, 1, 48000)
    with pytest.raises(ValueError):
        profile_shapes("t3_decode", MANIFEST_T, max_batch=1, max_frames=100, max_len=64)


def test_build_errors_before_needing_tensorrt(tmp_path):
    with pytest.raises(NutqError, match="nutq export onnx"):
        build_engines(tmp_path, tmp_path)
    with pytest.raises(ValueError, match="precision"):
        build_engines(tmp_path, tmp_path, precision="int8")
    (tmp_path / MANIFEST).write_text(json.dumps(MANIFEST_T))
    with pytest.raises(ValueError, match=">= 2"):
        build_engines(tmp_path, tmp_path, max_frames=1)


@pytest.mark.gpu
def test_engines_match_onnxruntime(tiny_checkpoint, tmp_path):
    """Build fp32 and fp16 HiFT/estimator engines from the tiny export and compare with ORT."""
    import numpy as np
    import torch

    pytest.importorskip("tensorrt")
    from nutq.checkpoints.files import resolve
    from nutq.engine.ort_backend import OrtGraphs
    from nutq.export.onnx import export_onnx
    from nutq.export.tensorrt import TrtGraph

    export_onnx(resolve(tiny_checkpoint), tmp_path, meanflow=False, optimize=False)
    g = OrtGraphs(tmp_path)
    B, T = 2, 40
    args = [torch.randn(B, 80, T), torch.ones(B, 1, T), torch.randn(B, 80, T), torch.rand(B), torch.randn(B, 80),
            torch.randn(B, 80, T)]
    ref = g.run("estimator_cfm", *args)[0]
    for precision, tol in (("fp32", 1e-3), ("fp16", 5e-2)):
        (plan,) = build_engines(tmp_path, tmp_path, precision=precision, names=["estimator_cfm"], max_frames=200)
        out = TrtGraph(plan)(*args)[0].float().cpu().numpy()
        assert np.abs(out - ref).max() <= tol * max(1.0, np.abs(ref).max())
