"""Weight-only quantization of T3's linear layers (torchao), and the file that keeps them.

Why torchao: with torch 2.13 on CPU its `Int8WeightOnlyConfig` (symmetric int8, one scale per
output channel) and `IntxWeightOnlyConfig(int4, groups of 32)` run, match a hand dequantisation
to float rounding, and survive `torch.save` / `torch.load(weights_only=True)`; a home-made kernel
would only repeat that. Activations stay in the checkpoint's float dtype: each matmul dequantises
its weight on the fly. int4 is stored unpacked (one int4 value per int8 byte, torchao's
`IntxUnpackedToInt8Tensor`): it has int4's numerics but int8's memory; packed int4 kernels in
torchao need CUDA or extra packages.

What is quantized: every `nn.Linear` of the Llama backbone (attention and MLP, 97% of T3's
weights) and the speech head. Embeddings, the conditioning encoder and the norms stay float.

The quantized file (`t3_int8.pt` / `t3_int4.pt`, written by `nutq export quantized`) is a torch
zip holding {"format": "nutq-t3-quantized", "version": 1, "scheme", "config" (T3Config as a
dict), "source" (size and header SHA-256 of the float file it came from), "state" (the state dict,
quantized tensors as torchao subclasses)}. Loading is strict: the scheme, the config and every
tensor name and shape must match, or a WeightLoadError says what differs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import struct
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import NutqError, WeightLoadError

__all__ = ["SCHEMES", "QuantizationUnavailable", "quantize_t3", "save_quantized", "load_quantized",
           "quantized_path", "source_signature", "load_t3", "quiet_imports"]

SCHEMES = ("int8", "int4")
FORMAT = "nutq-t3-quantized"
VERSION = 1
INT4_GROUP = 32


class QuantizationUnavailable(NutqError, ImportError):
    """torchao is not installed (the `quant` extra)."""


@contextlib.contextmanager
def quiet_imports():
    """Silence logging and warnings for the duration: torchao (and coremltools) log at import that
    their optional native parts are absent, which on a CPU (or Linux) machine is expected."""
    logger = logging.getLogger("torchao")
    level = logger.level
    logger.setLevel(logging.ERROR)
    root_level = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(root_level)
        logger.setLevel(level)


def _torchao():
    try:
        with quiet_imports():
            import torchao.quantization as tq
            from torchao.quantization.granularity import PerGroup
    except ImportError as e:
        raise QuantizationUnavailable(
            f"int8/int4 T3 needs torchao (pip install 'nutq[quant]'): {e}") from e
    return tq, PerGroup


def _config(scheme: str):
    tq, PerGroup = _torchao()
    if scheme == "int8":
        return tq.Int8WeightOnlyConfig()
    if scheme == "int4":
        return tq.IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(INT4_GROUP))
    raise ValueError(f"quantization scheme must be one of {SCHEMES}, got {scheme!r}")


def _is_target(module: nn.Module, fqn: str) -> bool:
    return isinstance(module, nn.Linear) and (fqn.startswith("tfmr.") or fqn == "speech_head")


def quantize_t3(t3: nn.Module, scheme: str) -> nn.Module:
    """Quantize T3's backbone linears and speech head in place (weights must be float, on any
    device torchao supports); returns `t3`."""
    cfg = _config(scheme)
    tq, _ = _torchao()
    with quiet_imports():
        tq.quantize_(t3, cfg, filter_fn=_is_target)
    t3.quantization = scheme
    return t3


def source_signature(path: str | Path) -> dict:
    """Size and SHA-256 of a safetensors header (names, dtypes, shapes, offsets): cheap to check
    at every load. It tells a quantized file made from another checkpoint layout apart; it cannot
    tell re-trained weights of the same layout apart (re-run `nutq export quantized` after those)."""
    path = Path(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = f.read(n)
    return {"size": path.stat().st_size, "header_sha256": hashlib.sha256(header).hexdigest()}


def quantized_path(root: str | Path, scheme: str) -> Path:
    return Path(root) / f"t3_{scheme}.pt"


def save_quantized(t3: nn.Module, path: str | Path, source: dict) -> Path:
    scheme = getattr(t3, "quantization", None)
    if scheme not in SCHEMES:
        raise ValueError("save_quantized needs a T3 quantized by quantize_t3")
    path = Path(path)
    torch.save({"format": FORMAT, "version": VERSION, "scheme": scheme, "config": dataclasses.asdict(t3.cfg),
                "source": source, "state": t3.state_dict()}, path)
    return path


def load_quantized(path: str | Path, cfg, scheme: str, *, source: dict | None = None,
                   device: str | torch.device = "cpu") -> nn.Module:
    """A quantized T3 from `save_quantized`'s file, checked strictly against `cfg` and `scheme`
    (and the float file's `source_signature`, when given)."""
    from .loading import _init_buffers, check_keys
    from .t3 import T3

    path = Path(path)
    _torchao()  # registers torchao's tensor types as safe for weights_only loading
    try:
        with quiet_imports():
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated zip or a foreign pickle: say which file
        raise WeightLoadError(f"{path}: not a readable quantized T3 file ({type(e).__name__}: {e})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise WeightLoadError(f"{path}: not a nutq quantized T3 file")
    if blob.get("version") != VERSION:
        raise WeightLoadError(f"{path}: format version {blob.get('version')}, this nutq reads {VERSION}")
    if blob["scheme"] != scheme:
        raise WeightLoadError(f"{path}: holds {blob['scheme']} weights, {scheme} was asked for")
    if blob["config"] != dataclasses.asdict(cfg):
        raise WeightLoadError(f"{path}: made for another T3 config than this checkpoint's")
    if source is not None and blob["source"] != source:
        raise WeightLoadError(f"{path}: made from another T3 file than this checkpoint's "
                              "(re-run `nutq export quantized`)")
    with torch.device("meta"):
        t3 = T3(cfg)
    state = blob["state"]
    check_keys({k: v.shape for k, v in t3.state_dict().items()}, state, where=str(path))
    t3.load_state_dict(state, strict=True, assign=True)
    _init_buffers(t3, torch.device("cpu"))
    t3.quantization = scheme
    return t3.to(device).eval()


def load_t3(root: str | Path, cfg, dtype: str | None, device: str | torch.device = "cpu") -> nn.Module:
    """T3 of a checkpoint directory in `dtype`: "fp32"/"bf16"/"fp16" (or None, the file's) cast
    at load; "int8"/"int4" from `t3_<scheme>.pt` when that file is in `root`, else quantized from
    the float file at load (a few seconds at full size)."""
    from .loading import DTYPES
    from .registry import COMPONENTS, load_component

    if dtype is None or dtype in DTYPES:
        return load_component(root, "t3", cfg, dtype=DTYPES[dtype] if dtype else None, device=device)
    if dtype not in SCHEMES:
        raise ValueError(f"T3 dtype must be one of {sorted(DTYPES)} or {SCHEMES}, got {dtype!r}")
    qfile = quantized_path(root, dtype)
    if qfile.exists():
        return load_quantized(qfile, cfg, dtype, source=source_signature(Path(root) / COMPONENTS["t3"].filename),
                              device=device)
    t3 = load_component(root, "t3", cfg, dtype=torch.float32, device=device)
    return quantize_t3(t3, dtype)
