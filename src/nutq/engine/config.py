"""`EngineConfig`: every choice an `Engine` is built with, fixed at construction, and how the
defaults resolve on the machine at hand.

    device "auto"            CUDA when present, else CPU
    dtype / flow_dtype None  bf16 on CUDA (T3 and S3Gen's flow), the file's fp32 on CPU
    tf32                     TF32 matmuls for the parts that stay fp32 (CUDA only)
    max_sessions None        CPU: 4 KV slots; CUDA: as many as fit in a share of free GPU memory
    max_queue                streams waiting beyond the free slots before new ones are refused
    max_cache_len            positions per KV slot, rounded up to a multiple of 64 (1500 -> 1536)
    draft None               speculative T3 decoding off; a draft file, "shortcut:N" or "target" turns it on

`resolve()` turns the "auto"/None fields into concrete values; it reads the machine (CUDA
presence) but allocates nothing. Pool sizing needs the model's shapes, so it happens in
`Engine` through `slots_for_memory`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ClientError
from .flow_options import FlowOptions, parse_flow

if TYPE_CHECKING:
    import torch

__all__ = ["EngineConfig", "STEP_KINDS", "CPU_SESSIONS", "DEFAULT_QUEUE", "slots_for_memory", "kv_bytes_per_slot"]

log = logging.getLogger(__name__)

STEP_KINDS = ("batched", "loop")  # BatchedStep (one forward for all) or LoopStep (solo forwards, bit-exact)
CPU_SESSIONS = 4  # KV slots on CPU: a full-size slot is ~0.7 GB of fp32 cache, and the CPU is the limit anyway
DEFAULT_QUEUE = 60  # waiting streams beyond the slots: 4 + 60 = 64 admitted at once on CPU by default
MAX_AUTO_SESSIONS = 64  # the KV pool sized from GPU memory never exceeds this (the batched step's ladder)
GPU_MEMORY_SHARE = 0.5  # of the free GPU memory at startup, for the KV pool (weights, graphs, flow work need the rest)
_DTYPE_NAMES = ("fp32", "bf16", "fp16")
_T3_DTYPE_NAMES = _DTYPE_NAMES + ("int8", "int4")  # weight-only quantized T3 linears (models.quant)
BACKENDS = ("torch", "onnxruntime")


@dataclass(frozen=True)
class EngineConfig:
    """device: "auto", "cpu", "cuda", "cuda:1", ...; dtype: T3's weights (fp32/bf16/fp16, None: by
    device); flow_dtype: S3Gen's flow (None: by device); flow: the decoder (`FlowOptions` or a kind
    name); max_sessions: KV slots (None: by device); max_cache_len: positions per slot
    (conditioning + text + speech tokens); max_queue: streams that may wait for a slot; step:
    "batched" or "loop" (see `engine.scheduler`); vocoder_batch: renders per flow call (None: 8 on
    CUDA, 1 on CPU); voice_store: where registered voices persist (None: memory only); tf32: allow
    TF32 matmuls on CUDA; backend: "torch", or "onnxruntime" to run offline `synthesize` on the graphs
    of `nutq export onnx` in `onnx_dir` (CPU, fp32 T3 only; streams stay on PyTorch's pooled T3).
    dtype may also be "int8"/"int4": weight-only quantized T3 linears. draft: speculative decoding
    (`engine.spec_decode`) with this draft (`draft.resolve_draft`: a file, "shortcut:N", "target"),
    spec_k drafts per round to start with (adapted per session), while at most spec_max_batch
    sessions step together; spec_tolerance > 0 is SSD's lossy acceptance (off: exact)."""

    device: str = "auto"
    dtype: str | None = None
    flow_dtype: str | None = None
    flow: FlowOptions = field(default_factory=FlowOptions)
    max_sessions: int | None = None
    max_cache_len: int = 1500
    max_queue: int = DEFAULT_QUEUE
    step: str = "batched"
    vocoder_batch: int | None = None
    voice_store: str | Path | None = None
    tf32: bool = True
    backend: str = "torch"
    onnx_dir: str | Path | None = None
    draft: str | Path | None = None
    spec_k: int = 4
    spec_max_batch: int = 1
    spec_tolerance: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "flow", parse_flow(self.flow))
        for name, names in (("dtype", _T3_DTYPE_NAMES), ("flow_dtype", _DTYPE_NAMES)):
            v = getattr(self, name)
            if v is not None and v not in names:
                raise ClientError(f"{name} must be one of {', '.join(names)} or None, got {v!r}")
        if self.backend not in BACKENDS:
            raise ClientError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "onnxruntime" and self.onnx_dir is None:
            raise ClientError("the onnxruntime backend needs onnx_dir (a directory from `nutq export onnx`)")
        if self.max_sessions is not None and self.max_sessions < 1:
            raise ClientError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.max_cache_len < 2:
            raise ClientError(f"max_cache_len must be >= 2, got {self.max_cache_len}")
        if self.max_queue < 0:
            raise ClientError(f"max_queue must be >= 0, got {self.max_queue}")
        if self.step not in STEP_KINDS:
            raise ClientError(f"step must be one of {', '.join(STEP_KINDS)}, got {self.step!r}")
        if not 1 <= self.spec_k <= 16 or self.spec_max_batch < 1 or not 0.0 <= self.spec_tolerance < 1.0:
            raise ClientError(f"speculative decoding wants spec_k in 1..16, spec_max_batch >= 1 and spec_tolerance in "
                              f"[0, 1), got {self.spec_k}, {self.spec_max_batch}, {self.spec_tolerance}")
        if self.vocoder_batch is not None and self.vocoder_batch < 1:
            raise ClientError(f"vocoder_batch must be >= 1 or None, got {self.vocoder_batch}")

    @property
    def capacity(self) -> int | None:
        """Streams admitted at once (decoding + waiting); None until `max_sessions` is known."""
        return None if self.max_sessions is None else self.max_sessions + self.max_queue

    def resolve(self) -> "EngineConfig":
        """The device and dtypes made concrete for this machine ("auto" -> cuda or cpu; None
        dtypes -> bf16 on CUDA, the weights' own fp32 elsewhere). `max_sessions` stays None on
        CUDA (sized from memory once the model is loaded) and becomes `CPU_SESSIONS` on CPU.
        `max_cache_len` is rounded up to a multiple of 64 (`kv_pool.aligned_cache_len`: aligned
        attention kernels and graph spans), so the default 1500 gives 1536 positions."""
        import torch  # here, not at the top: `nutq --help` builds its parsers from this module's defaults

        from .kv_pool import aligned_cache_len  # (kv_pool imports torch)

        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(device)
        except RuntimeError as e:
            raise ClientError(f"unknown device {device!r}: {e}") from None
        cuda = dev.type == "cuda"
        return replace(self, device=str(dev), max_cache_len=aligned_cache_len(self.max_cache_len),
                       dtype=self.dtype or ("bf16" if cuda else None),
                       flow_dtype=self.flow_dtype or ("bf16" if cuda else None),
                       max_sessions=self.max_sessions or (None if cuda else CPU_SESSIONS))


def kv_bytes_per_slot(n_layers: int, n_kv_heads: int, head_dim: int, max_len: int, dtype: torch.dtype,
                      rows: int = 2) -> int:
    """KV cache bytes of one session: keys and values, every layer, its CFG rows, every position."""
    return 2 * n_layers * rows * n_kv_heads * head_dim * max_len * dtype.itemsize


def slots_for_memory(free_bytes: int, per_slot: int, share: float = GPU_MEMORY_SHARE,
                     cap: int = MAX_AUTO_SESSIONS) -> int:
    """KV slots that fit in `share` of `free_bytes`, at least 1 and at most `cap`."""
    return max(1, min(cap, int(free_bytes * share) // per_slot))
