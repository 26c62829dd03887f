"""Core ML packages of the flow estimator and HiFT (`nutq export coreml OUT_DIR`).

Converted with coremltools (its converter runs on Linux; running a package needs macOS 13+ on
Apple silicon). The models are traced with `torch.jit.trace` (coremltools' mature path; its
torch.export path also converts them here but more slowly) at batch 2 for the estimator (the
conditional and unconditional CFG rows of one utterance) and batch 1 for HiFT, with the number of
mel frames flexible from 2 to `frames`. HiFT uses the DFT-convolution STFT/iSTFT of the ONNX
export (`nutq.export.graphs.DFT_STFT`); its F0 predictor and random sine source stay with the
caller, as in the ONNX backend. Inputs/outputs: estimator_cfm.mlpackage (x, mask, mu, t, spks,
cond) -> velocity; [estimator_meanflow.mlpackage: + r]; hift_decode.mlpackage (mel, source) -> wav;
hift_f0.mlpackage (mel) -> f0. Precision: fp16 compute (Core ML's default for ML programs).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoints.files import MEANFLOW_FILE, CheckpointFiles
from ..errors import NutqError
from ..models.quant import quiet_imports
from ..models.registry import configs_from_sidecar, load_component, load_meanflow
from . import graphs

__all__ = ["CoreMLUnavailable", "convert"]


class CoreMLUnavailable(NutqError, ImportError):
    """coremltools is not installed (the `coreml` extra)."""


def _ct():
    try:
        with quiet_imports():
            import coremltools as ct
    except ImportError as e:
        raise CoreMLUnavailable(f"Core ML conversion needs coremltools (pip install 'nutq[coreml]'): {e}") from e
    return ct


def _convert_one(ct, module, args, names, outputs, frames: int, out: Path) -> Path:
    n = ct.RangeDim(lower_bound=2, upper_bound=frames, default=args[0].shape[-1])
    spf = None
    inputs = []
    for name, a in zip(names, args):
        shape = list(a.shape)
        if name == "source":
            spf = shape[-1] // args[0].shape[-1]
            shape[-1] = ct.RangeDim(lower_bound=2 * spf, upper_bound=frames * spf, default=shape[-1])
        elif a.dim() == 3:
            shape[-1] = n
        inputs.append(ct.TensorType(name=name, shape=tuple(shape)))
    with torch.no_grad(), quiet_imports():
        traced = torch.jit.trace(module.eval(), args)
        model = ct.convert(traced, inputs=inputs, outputs=[ct.TensorType(name=o) for o in outputs],
                           convert_to="mlprogram", minimum_deployment_target=ct.target.macOS13)
    model.save(str(out))
    return out


def convert(files: CheckpointFiles, out_dir: str | Path, *, frames: int = 500) -> list[Path]:
    """Write the packages into `out_dir`; returns their paths."""
    if frames < 2:
        raise ValueError("frames must be >= 2")
    ct = _ct()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfgs = configs_from_sidecar(files.sidecar)
    s3gen = load_component(files.root, "s3gen", cfgs["s3gen"], dtype=torch.float32)
    T = min(40, frames)
    est_args = (torch.randn(2, 80, T), torch.ones(2, 1, T), torch.randn(2, 80, T), torch.rand(2), torch.randn(2, 80),
                torch.randn(2, 80, T))
    est_names = ["x", "mask", "mu", "t", "spks", "cond"]
    written = [_convert_one(ct, graphs.EstimatorCFM(s3gen.flow.decoder.estimator), est_args, est_names,
                            ["velocity"], frames, out_dir / "estimator_cfm.mlpackage")]
    if (files.meanflow_file or files.root / MEANFLOW_FILE).is_file():
        mf = load_meanflow(files.meanflow, cfgs["s3gen"], dtype=torch.float32)
        written.append(_convert_one(ct, graphs.EstimatorMeanFlow(mf.flow.decoder.estimator), (*est_args, torch.rand(2)),
                                    est_names + ["r"], ["velocity"], frames, out_dir / "estimator_meanflow.mlpackage"))
    hift = s3gen.mel2wav
    mel = torch.randn(1, 80, min(10, frames))
    with torch.no_grad():
        source = hift.source(hift.f0(mel), generator=torch.Generator().manual_seed(0))
    written.append(_convert_one(ct, graphs.HiFTDecode(hift), (mel, source), ["mel", "source"], ["wav"], frames,
                                out_dir / "hift_decode.mlpackage"))
    written.append(_convert_one(ct, graphs.HiFTF0(hift), (mel,), ["mel"], ["f0"], frames, out_dir / "hift_f0.mlpackage"))
    return written
