"""What a T3 fine-tune trains: everything but the first N Llama layers, or LoRA adapters.

LoRA is written here rather than taken from `peft`: peft requires `transformers` and `accelerate`
at install and import time, which nutq does not otherwise need, and the part used here is one
small module (a frozen Linear plus a low-rank update B·A scaled by alpha/r, B initialised to zero
so training starts from the base model exactly). `merge_lora` folds the update into the Linear
weights and removes the wrappers, which gives back a plain T3 with the official state-dict names.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...models.t3 import T3
from ...models.t3_cond import PerceiverAttention

__all__ = ["freeze_first_layers", "add_lora", "merge_lora", "LoRALinear", "LORA_TARGETS", "trainable_count",
           "set_training_dropout", "PERCEIVER_DROPOUT"]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PERCEIVER_DROPOUT = 0.2  # the official perceiver attention block's dropout, active in train mode


def set_training_dropout(model: T3, p: float = PERCEIVER_DROPOUT) -> None:
    for m in model.modules():
        if isinstance(m, PerceiverAttention):
            m.attn_dropout = p


def freeze_first_layers(model: T3, n: int) -> None:
    """Train everything except Llama layers [0, n) and the backbone's unused token embedding."""
    layers = model.tfmr.layers
    if not 0 <= n <= len(layers):
        raise ValueError(f"cannot freeze {n} layers of a {len(layers)}-layer backbone")
    for p in model.parameters():
        p.requires_grad_(True)
    model.tfmr.embed_tokens.weight.requires_grad_(False)
    for layer in layers[:n]:
        for p in layer.parameters():
            p.requires_grad_(False)


class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.scale = alpha / rank
        dev, dt = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=dev, dtype=dt))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=dev, dtype=dt))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear initialises its weight
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    def merged(self) -> nn.Linear:
        with torch.no_grad():
            self.base.weight += (self.lora_b @ self.lora_a) * self.scale
        return self.base


def add_lora(model: T3, rank: int = 16, alpha: float = 32.0, dropout: float = 0.0,
             targets: tuple[str, ...] = LORA_TARGETS) -> None:
    """Freeze every weight and wrap the `targets` Linears of every Llama layer with adapters."""
    unknown = set(targets) - set(LORA_TARGETS)
    if unknown:
        raise ValueError(f"unknown LoRA targets {sorted(unknown)}; choose from {', '.join(LORA_TARGETS)}")
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.tfmr.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name in targets:
                if isinstance(getattr(parent, name, None), nn.Linear):
                    setattr(parent, name, LoRALinear(getattr(parent, name), rank, alpha, dropout))


def merge_lora(model: T3) -> T3:
    """Fold every adapter into its Linear (in place) and unwrap it; returns the model."""
    for layer in model.tfmr.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name, child in list(parent.named_children()):
                if isinstance(child, LoRALinear):
                    setattr(parent, name, child.merged())
    return model


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
