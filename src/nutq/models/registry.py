"""The model components of a checkpoint: their config types, official and tiny sizes, builders.

One row per file of the official multilingual layout. The distilled meanflow decoder is an S3Gen
too, whose sizes are always those of the checkpoint's `s3gen` (`build_meanflow`, `load_meanflow`),
so it has no config of its own in a sidecar. `configs_for_size` and `configs_from_sidecar` give the
configs to build; `load_component` builds one on the meta device and loads its file strictly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["COMPONENTS", "configs_for_size", "configs_from_sidecar", "build", "load_component", "build_meanflow",
           "load_meanflow"]


@dataclass(frozen=True)
class Component:
    name: str
    filename: str
    config: Callable[[], tuple[type, Any, Any]]  # -> (config class, FULL, TINY), imported lazily
    module: Callable[[Any], torch.nn.Module]


def _t3():
    from .t3 import T3_FULL, T3_TINY, T3Config

    return T3Config, T3_FULL, T3_TINY


def _t3_module(cfg):
    from .t3 import T3

    return T3(cfg)


def _ve():
    from .voice_encoder import FULL as VE_FULL
    from .voice_encoder import TINY as VE_TINY
    from .voice_encoder import VoiceEncoderConfig

    return VoiceEncoderConfig, VE_FULL, VE_TINY


def _ve_module(cfg):
    from .voice_encoder import VoiceEncoder

    return VoiceEncoder(cfg)


def _s3gen():
    from .s3gen.model import S3GEN_FULL, S3GEN_TINY, S3GenConfig

    return S3GenConfig, S3GEN_FULL, S3GEN_TINY


def _s3gen_module(cfg):
    from .s3gen.model import S3Gen

    return S3Gen(cfg)


COMPONENTS = {
    "t3": Component("t3", "t3_mtl23ls_v2.safetensors", _t3, _t3_module),
    "ve": Component("ve", "ve.pt", _ve, _ve_module),
    "s3gen": Component("s3gen", "s3gen.pt", _s3gen, _s3gen_module),
}


def config_from_dict(cls: type, d: dict) -> Any:
    """Rebuild a (possibly nested) frozen dataclass config from its `asdict` JSON form."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v, t = d[f.name], hints[f.name]
        if dataclasses.is_dataclass(t) and isinstance(v, dict):
            v = config_from_dict(t, v)
        elif isinstance(v, list):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)  # JSON lists back to tuples
        kwargs[f.name] = v
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config fields {sorted(unknown)}")
    return cls(**kwargs)


def configs_for_size(size: str) -> dict[str, Any]:
    if size not in ("tiny", "full"):
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    return {n: c.config()[1 if size == "full" else 2] for n, c in COMPONENTS.items()}


def configs_from_sidecar(sidecar: dict) -> dict[str, Any]:
    """Configs recorded by `make-checkpoint` (nutq.json); official sizes for what it omits."""
    out = {}
    for n, c in COMPONENTS.items():
        cls, full, _ = c.config()
        out[n] = config_from_dict(cls, sidecar[n]) if n in sidecar else full
    return out


def build(name: str, cfg: Any) -> torch.nn.Module:
    return COMPONENTS[name].module(cfg).eval()


def load_component(root, name: str, cfg: Any, *, dtype: torch.dtype | None = None, device="cpu") -> torch.nn.Module:
    from pathlib import Path

    from .loading import load_module

    path = Path(root) / COMPONENTS[name].filename
    return load_module(lambda: COMPONENTS[name].module(cfg), path, dtype=dtype, device=device)


def build_meanflow(s3gen_cfg: Any) -> torch.nn.Module:
    """The distilled decoder: an S3Gen of the checkpoint's sizes with the meanflow estimator."""
    from .s3gen.model import S3Gen, with_meanflow

    return S3Gen(with_meanflow(s3gen_cfg)).eval()


def load_meanflow(path, s3gen_cfg: Any, *, dtype: torch.dtype | None = None, device="cpu") -> torch.nn.Module:
    """`s3gen_meanflow.safetensors` loaded strictly (memory-mapped, or streamed and cast with dtype)."""
    from .loading import load_module

    return load_module(lambda: build_meanflow(s3gen_cfg), path, dtype=dtype, device=device)

