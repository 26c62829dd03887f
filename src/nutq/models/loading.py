"""Strict, low-memory weight loading.

Modules are built on the `meta` device (no memory), the file is memory-mapped (safetensors natively,
`torch.load(mmap=True)` for .pt zips), names are checked against the module's own state dict, and
tensors are assigned in place (`assign=True`) so fp32 weights are never copied. Casting to another
dtype copies one tensor at a time, so peak memory stays near the larger of the two copies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightLoadError

__all__ = ["WeightLoadError", "read_state_dict", "check_keys", "load_module", "DTYPES"]

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}



_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def _read_safetensors_cast(path: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Stream a safetensors file tensor by tensor with plain reads, casting floats to `dtype`.

    Reading into a fresh buffer (instead of touching an mmap) keeps only one source tensor alive
    at a time, so loading fp32 weights as bf16 peaks near 0.5x the file, not 1.5x.
    """
    import json
    import struct

    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        base = 8 + n
        # One reusable scratch buffer for the source bytes: per-tensor temporaries would leave the
        # allocator holding freed fp32 memory and push the peak well above the cast weights.
        scratch = torch.empty(max((i["data_offsets"][1] - i["data_offsets"][0] for i in header.values()), default=0),
                              dtype=torch.uint8)
        for name, info in header.items():
            src = _ST_DTYPES.get(info["dtype"])
            if src is None:
                raise WeightLoadError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
            start, end = info["data_offsets"]
            raw = scratch[: end - start]
            f.seek(base + start)
            if end > start and f.readinto(memoryview(raw.numpy())) != end - start:
                raise WeightLoadError(f"{path}: truncated while reading {name}")
            t = raw.view(src).reshape(info["shape"])
            cast = dtype if t.is_floating_point() else src
            out[name] = t.to(cast, copy=True)
    return out


def read_state_dict(path: str | Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors or torch .pt file, on CPU.

    Without `dtype` the file is memory-mapped and tensors keep the file's dtype (no copy). With
    `dtype`, safetensors files are streamed and floating tensors cast on the way in.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        if dtype is not None:
            return _read_safetensors_cast(path, dtype)
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    sd = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    if isinstance(sd, Mapping) and "model" in sd and not isinstance(sd["model"], torch.Tensor):
        sd = sd["model"][0]  # training-checkpoint wrapper accepted by the official from_local
    if not isinstance(sd, Mapping):
        raise WeightLoadError(f"{path}: expected a state dict, found {type(sd).__name__}")
    return dict(sd)


def check_keys(expected: Mapping[str, torch.Size], found: Mapping[str, torch.Tensor], *, where: str,
               allow_missing: Iterable[str] = (), allow_unexpected: Iterable[str] = ()) -> None:
    """Fail loudly, naming every missing, unexpected and mis-shaped tensor."""
    allow_missing, allow_unexpected = set(allow_missing), set(allow_unexpected)
    missing = sorted(set(expected) - set(found) - allow_missing)
    unexpected = sorted(set(found) - set(expected) - allow_unexpected)
    shapes = sorted(f"{k}: file {tuple(found[k].shape)} vs model {tuple(expected[k])}"
                    for k in set(expected) & set(found) if tuple(found[k].shape) != tuple(expected[k]))
    if missing or unexpected or shapes:
        def show(xs):
            return ", ".join(xs[:20]) + (f" … (+{len(xs) - 20})" if len(xs) > 20 else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {show(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {show(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} wrong shape: {show(shapes)}")
        raise WeightLoadError(f"{where}: weights do not match the model; " + "; ".join(parts))


def _init_buffers(module: nn.Module, device: torch.device) -> None:
    """Rebuild non-persistent buffers (RoPE tables, windows) that the meta build left empty."""
    for m in module.modules():
        hook = getattr(m, "init_buffers", None)
        if callable(hook):
            hook(device)


def load_module(build: Callable[[], nn.Module], state: Mapping[str, torch.Tensor] | str | Path, *,
                dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                where: str | None = None) -> nn.Module:
    """Build a module on meta, load `state` strictly by assignment, cast and move; eval mode."""
    where = where or (str(state) if isinstance(state, (str, Path)) else "state dict")
    if isinstance(state, (str, Path)):
        state = read_state_dict(state, dtype)
    with torch.device("meta"):
        module = build()
    expected = {k: v.shape for k, v in module.state_dict().items()}
    check_keys(expected, state, where=where)
    module.load_state_dict(state, strict=True, assign=True)
    _init_buffers(module, torch.device("cpu"))
    device = torch.device(device)
    if dtype is not None:
        # Cast floating tensors one by one (integer buffers such as BatchNorm counters stay), except
        # buffers a module keeps in fp32 (`FP32_BUFFERS`): RoPE frequencies rounded to bf16 put
        # the phase off by up to ~1.4 rad at position 1500.
        keep = {id(getattr(m, name)) for m in module.modules() for name in getattr(m, "FP32_BUFFERS", ())}
        for t in list(module.parameters()) + list(module.buffers()):
            if t.is_floating_point() and t.dtype != dtype and id(t) not in keep:
                t.data = t.data.to(device=device, dtype=dtype)
    for m in list(module.modules()):  # one-time inference rewrites (e.g. HiFT folds its weight norm)
        hook = getattr(m, "after_load", None)
        if callable(hook):
            hook()
    return module.to(device).eval()
