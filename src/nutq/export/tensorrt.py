"""TensorRT engines from an ONNX export (`nutq export tensorrt ONNX_DIR`), and a runner for them.

Each graph of `nutq export onnx` becomes `<name>.<precision>.plan`, built with one optimization
profile whose dynamic axes (batch, lengths) range from 1 to the given maxima. fp16 and bf16 set
the builder flag of that precision (weights and activations; the layers TensorRT keeps in fp32
for range stay so). Needs the `tensorrt` Python package and an NVIDIA GPU (with torch CUDA for
the runner).

Status: written and checked here for syntax and argument handling only; no GPU was available, so
no engine has been built or timed with it yet (`tests/export/test_tensorrt.py` has a GPU test).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..engine.ort_backend import MANIFEST
from ..errors import NutqError

__all__ = ["TensorRTUnavailable", "profile_shapes", "build_engines", "TrtGraph"]


class TensorRTUnavailable(NutqError, RuntimeError):
    """tensorrt is not installed, or no CUDA device is visible."""


def _trt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(f"building engines needs NVIDIA TensorRT (pip install tensorrt) and a GPU: {e}") from e
    return trt


def profile_shapes(name: str, manifest: dict, *, max_batch: int, max_frames: int, max_len: int) -> dict:
    """{input: (min, opt, max) shape} of one graph's optimization profile."""
    if min(max_batch, max_frames, max_len) < 2:
        raise ValueError("max_batch, max_frames and max_len must be >= 2")
    t3 = manifest["t3"]
    L, H, D, C = t3["layers"], t3["kv_heads"], t3["head_dim"], t3["hidden"]
    b = (1, min(2, max_batch), max_batch)
    mid = max_frames // 2

    def mel(ch):
        return (1, ch, 2), (b[1], ch, mid), (max_batch, ch, max_frames)

    if name == "t3_prefill":
        return {"embeds": ((1, 2, C), (2, 64, C), (max_batch, max_len, C))}
    if name == "t3_decode":
        kv = ((L, 1, H, 1, D), (L, 2, H, max_len // 2, D), (L, max_batch, H, max_len - 1, D))
        return {"embeds": ((1, 1, C), (2, 1, C), (max_batch, 1, C)), "past_k": kv, "past_v": kv}
    if name.startswith("estimator_"):
        vec = ((1,), (b[1],), (max_batch,))
        shapes = {"x": mel(80), "mask": mel(1), "mu": mel(80), "t": vec,
                  "spks": ((1, 80), (b[1], 80), (max_batch, 80)), "cond": mel(80)}
        if name == "estimator_meanflow":
            shapes["r"] = vec
        return shapes
    if name == "flow_encoder":
        tokens = max_frames // 2
        return {"xs": ((1, 2, 512), (b[1], tokens // 2, 512), (max_batch, tokens, 512)),
                "xs_lens": ((1,), (b[1],), (max_batch,))}
    if name == "hift_f0":
        return {"mel": mel(80)}
    if name == "hift_decode":
        spf = manifest["samples_per_frame"]
        return {"mel": mel(80), "source": tuple((s[0], 1, s[2] * spf) for s in mel(80))}
    raise ValueError(f"unknown graph {name!r}")


def build_engines(onnx_dir: str | Path, out_dir: str | Path, *, precision: str = "fp16", max_batch: int = 8,
                  max_frames: int = 2000, max_len: int = 2048, workspace_gb: float = 4.0,
                  names: list[str] | None = None) -> list[Path]:
    if precision not in ("fp16", "bf16", "fp32"):
        raise ValueError(f"precision must be fp16, bf16 or fp32, got {precision!r}")
    onnx_dir, out_dir = Path(onnx_dir), Path(out_dir)
    mpath = onnx_dir / MANIFEST
    if not mpath.is_file():
        raise NutqError(f"{onnx_dir}: no {MANIFEST}; run `nutq export onnx {onnx_dir}` first")
    manifest = json.loads(mpath.read_text())
    # Shapes are checked before TensorRT is needed, so bad arguments fail on any machine.
    jobs = {n: profile_shapes(n, manifest, max_batch=max_batch, max_frames=max_frames, max_len=max_len)
            for n in (names or manifest["graphs"])}
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, shapes in jobs.items():
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT >= 10
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_dir / manifest["graphs"][name]["file"])):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise NutqError(f"TensorRT cannot parse {name}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
        if precision != "fp32":
            config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
        profile = builder.create_optimization_profile()
        for inp, (lo, opt, hi) in shapes.items():
            profile.set_shape(inp, lo, opt, hi)
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise NutqError(f"TensorRT could not build {name} (see its log above)")
        path = out_dir / f"{name}.{precision}.plan"
        path.write_bytes(bytes(plan))
        written.append(path)
    return written


class TrtGraph:
    """One engine, called with CUDA torch tensors in the graph's input order; returns its outputs."""

    def __init__(self, plan: str | Path):
        import torch

        trt = _trt()
        if not torch.cuda.is_available():
            raise TensorRTUnavailable("running a TensorRT engine needs a CUDA device")
        self._torch = torch
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(plan).read_bytes())
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.bfloat16: torch.bfloat16,
                 trt.int64: torch.int64, trt.int32: torch.int32, trt.bool: torch.bool}
        self._dtypes = {n: table[self.engine.get_tensor_dtype(n)] for n in names}

    def __call__(self, *args):
        torch = self._torch
        stream = torch.cuda.current_stream()
        if len(args) != len(self.inputs):
            raise ValueError(f"the engine takes {self.inputs}, got {len(args)} tensors")
        held = [x.contiguous().to("cuda", self._dtypes[n]) for n, x in zip(self.inputs, args)]  # alive until run
        for name, x in zip(self.inputs, held):
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
        outs = []
        for name in self.outputs:
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self._dtypes[name], device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outs.append(out)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise NutqError("TensorRT execution failed")
        return outs
