"""`nutq export`: ONNX graphs, TensorRT engines, Core ML packages and quantized T3 weights.

    nutq export onnx OUT_DIR [--model-dir D] [--no-meanflow]
    nutq export tensorrt ONNX_DIR [--precision fp16|bf16|fp32] [--out DIR]     (needs TensorRT + a GPU)
    nutq export coreml OUT_DIR [--model-dir D] [--frames N]                     (needs coremltools)
    nutq export quantized --dtype int8|int4 [--model-dir D] [-o FILE]           (needs torchao)
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _files(args):
    from ..checkpoints.files import resolve

    return resolve(args.model_dir, flow="cfm")


def _onnx(args) -> int:
    from .onnx import export_onnx

    manifest = export_onnx(_files(args), args.out_dir, meanflow=False if args.no_meanflow else None)
    for name, g in manifest["graphs"].items():
        print(f"{name}: {Path(args.out_dir) / g['file']}")
    return 0


def _tensorrt(args) -> int:
    from .tensorrt import build_engines

    for path in build_engines(args.onnx_dir, args.out or args.onnx_dir, precision=args.precision,
                              max_batch=args.max_batch, max_frames=args.max_frames, max_len=args.max_len,
                              workspace_gb=args.workspace_gb):
        print(path)
    return 0


def _coreml(args) -> int:
    from .coreml import convert

    for path in convert(_files(args), args.out_dir, frames=args.frames):
        print(path)
    return 0


def _quantized(args) -> int:
    from ..models.quant import quantize_t3, quantized_path, save_quantized, source_signature
    from ..models.registry import configs_from_sidecar, load_component

    files = _files(args)
    t3 = load_component(files.root, "t3", configs_from_sidecar(files.sidecar)["t3"])
    out = Path(args.output) if args.output else quantized_path(files.root, args.dtype)
    print(save_quantized(quantize_t3(t3, args.dtype), out, source_signature(files.t3)))
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export graphs (ONNX, TensorRT, Core ML) or quantized T3 weights")
    targets = p.add_subparsers(dest="target", metavar="TARGET", required=True)

    def model_dir(q):
        q.add_argument("--model-dir", help="checkpoint directory (also $NUTQ_MODEL_DIR); default: download")

    q = targets.add_parser("onnx", help="T3 prefill/decode, flow estimator(s) and encoder, HiFT as ONNX (fp32)")
    q.add_argument("out_dir")
    model_dir(q)
    q.add_argument("--no-meanflow", action="store_true", help="skip the distilled estimator even if its file exists")
    q.set_defaults(func=_onnx)

    q = targets.add_parser("tensorrt", help="TensorRT engines from an ONNX export (NVIDIA GPU + tensorrt)")
    q.add_argument("onnx_dir", help="a directory written by `nutq export onnx`")
    q.add_argument("--out", help="where the .plan files go (default: ONNX_DIR)")
    q.add_argument("--precision", choices=["fp16", "bf16", "fp32"], default="fp16")
    q.add_argument("--max-batch", type=int, default=8)
    q.add_argument("--max-frames", type=int, default=2000, help="longest mel (frames) of the flow/HiFT profiles")
    q.add_argument("--max-len", type=int, default=2048, help="longest T3 sequence (cache positions)")
    q.add_argument("--workspace-gb", type=float, default=4.0)
    q.set_defaults(func=_tensorrt)

    q = targets.add_parser("coreml", help="flow estimator and HiFT decoder as Core ML packages (Apple)")
    q.add_argument("out_dir")
    model_dir(q)
    q.add_argument("--frames", type=int, default=500, help="upper bound of the mel length (frames) the models accept")
    q.set_defaults(func=_coreml)

    q = targets.add_parser("quantized", help="write T3 with weight-only int8/int4 linears (t3_<dtype>.pt)")
    q.add_argument("--dtype", choices=["int8", "int4"], required=True)
    model_dir(q)
    q.add_argument("-o", "--output", help="file to write (default: MODEL_DIR/t3_<dtype>.pt, which --dtype loads)")
    q.set_defaults(func=_quantized)
    return p
