"""Core ML conversion of the flow estimators and HiFT (conversion only: prediction needs macOS)."""

import pytest

from nutq.checkpoints.files import resolve


def test_convert_and_check_io(tiny_checkpoint, tmp_path):
    pytest.importorskip("coremltools", reason="the coreml extra (coremltools) is not installed")
    from nutq.export.coreml import _ct, convert

    ct = _ct()
    paths = convert(resolve(tiny_checkpoint), tmp_path, frames=64)
    want = {"estimator_cfm": (["x", "mask", "mu", "t", "spks", "cond"], ["velocity"]),
            "estimator_meanflow": (["x", "mask", "mu", "t", "spks", "cond", "r"], ["velocity"]),
            "hift_decode": (["mel", "source"], ["wav"]), "hift_f0": (["mel"], ["f0"])}
    assert sorted(p.stem for p in paths) == sorted(want)
    for p in paths:
        spec = ct.models.MLModel(str(p), skip_model_load=True).get_spec()
        ins = [i.name for i in spec.description.input]
        outs = [o.name for o in spec.description.output]
        assert (ins, outs) == want[p.stem]
        mel_like = spec.description.input[0].type.multiArrayType
        rng = mel_like.shapeRange.sizeRanges[-1]  # the frames axis is flexible
        assert (rng.lowerBound, rng.upperBound) == (2, 64)
