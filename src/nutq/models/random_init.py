"""Deterministic random weights keyed by tensor name.

Parity fixtures are made by running the *official* modules inside the reference env and nutq's
modules here. Both sides fill their state dicts with this function, so equal names and shapes give
bit-identical weights without shipping weight files: each tensor is drawn from its own generator
seeded by (seed, crc32(name)), independent of iteration order and of which other tensors exist.
`nutq make-checkpoint` uses it too, so a random checkpoint is reproducible from its seed.

This module must stay importable with torch alone (the reference env imports it).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import torch

__all__ = ["random_tensor", "fill_state_dict", "randomize_module"]


def _generator(seed: int, name: str) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
    return g


def random_tensor(name: str, shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """A tensor for `name` whose scale keeps activations sane in any depth of network.

    - integer tensors (e.g. BatchNorm `num_batches_tracked`): zeros;
    - BatchNorm `running_var`: positive, near 1; `running_mean`: small;
    - 1-D `weight`/`gamma`/`alpha`/`g`-like norm scales: 1 + 0.1·N(0,1);
    - other 1-D tensors (biases): 0.02·N(0,1);
    - weight-norm magnitudes (`original0`): near 1;
    - ≥2-D: N(0,1)/sqrt(fan_in), fan_in = prod(shape[1:]).
    """
    if not dtype.is_floating_point:
        return torch.zeros(shape, dtype=dtype)
    g = _generator(seed, name)
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        x = 1.0 + 0.1 * x.abs()
    elif leaf == "running_mean":
        x = 0.1 * x
    elif leaf == "original0":
        x = 1.0 + 0.05 * x
    elif len(shape) <= 1:
        is_scale = leaf in {"weight", "gamma", "alpha", "beta_scale"} or leaf.startswith("alpha")
        x = 1.0 + 0.1 * x if is_scale else 0.02 * x
    else:
        fan_in = math.prod(shape[1:])
        x = x / math.sqrt(max(fan_in, 1))
    return x.to(dtype)


def fill_state_dict(shapes: Mapping[str, tuple[tuple[int, ...], torch.dtype]], seed: int) -> dict[str, torch.Tensor]:
    """{name: (shape, dtype)} -> {name: tensor}."""
    return {k: random_tensor(k, tuple(s), d, seed) for k, (s, d) in shapes.items()}


@torch.no_grad()
def randomize_module(module: torch.nn.Module, seed: int, keep_suffixes: tuple[str, ...] = ()) -> torch.nn.Module:
    """Overwrite every tensor in `module.state_dict()` with `random_tensor`.

    Keys ending in one of `keep_suffixes` keep their value: fixed signal-processing constants that
    the official files store as buffers (STFT windows, mel filterbanks) must stay what they are.
    """
    sd = module.state_dict()
    new = fill_state_dict(
        {k: (tuple(v.shape), v.dtype) for k, v in sd.items() if not k.endswith(keep_suffixes)}, seed
    )
    new.update({k: v for k, v in sd.items() if k.endswith(keep_suffixes)})
    module.load_state_dict(new, strict=True)
    return module
