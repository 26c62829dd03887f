"""How many streams an engine admits, known before it loads: its KV slots plus its waiting line.

A router in front of engines (Ray Serve's `max_ongoing_requests`) must be told this before any
replica exists. `planned_capacity` resolves an `EngineConfig` the way `Engine` will: the given
`max_sessions`, `CPU_SESSIONS` on CPU, and on CUDA the KV pool sized from free GPU memory with the
same formula the engine uses (`gpu_slots`), from the checkpoint's recorded shapes, without loading
any weights. Before loading, the memory the weights will take is not yet used; it is estimated as
the weight files' sizes (fp32 files: an upper bound for a bf16 engine), so the estimate errs low.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .config import EngineConfig, kv_bytes_per_slot, slots_for_memory

__all__ = ["gpu_slots", "planned_capacity"]

log = logging.getLogger(__name__)


def gpu_slots(device, llama, max_cache_len: int, dtype, reserved_bytes: int = 0) -> int:
    """KV slots of T3 shapes `llama` in `dtype` that fit in a share of `device`'s free memory, less
    `reserved_bytes` not yet allocated (weights still to load). What `Engine` sizes its pool by."""
    import torch

    from .kv_pool import ROWS_PER_SESSION

    free, _ = torch.cuda.mem_get_info(device)
    per_slot = kv_bytes_per_slot(llama.num_layers, llama.num_kv_heads, llama.head_dim, max_cache_len, dtype,
                                 ROWS_PER_SESSION)
    slots = slots_for_memory(max(free - reserved_bytes, 0), per_slot)
    log.info("KV pool sized from GPU memory: %.1f GiB free, %.0f MiB per session -> %d sessions",
             (free - reserved_bytes) / 2**30, per_slot / 2**20, slots)
    return slots


def planned_capacity(config: EngineConfig, files=None) -> int:
    """Streams an `Engine(files, config)` will admit at once (decoding + waiting), without loading
    it. `files`: the resolved checkpoint (its shapes and weight sizes); None: the official sizes."""
    cfg = config.resolve()
    if cfg.max_sessions is not None:
        return cfg.max_sessions + cfg.max_queue
    import torch

    from ..models.loading import DTYPES
    from ..models.registry import configs_from_sidecar

    llama = configs_from_sidecar(files.sidecar if files is not None else {})["t3"].llama
    # the pool takes T3's float dtype (a weight-only quantized T3 keeps fp32 activations)
    dtype = DTYPES.get(cfg.dtype or "fp32", torch.float32)
    weights = 0
    if files is not None:
        decoder = files.meanflow if cfg.flow.meanflow else files.s3gen  # the one the engine will load
        weights = sum(Path(p).stat().st_size for p in (files.t3, decoder, files.ve))
    return gpu_slots(torch.device(cfg.device), llama, cfg.max_cache_len, dtype, weights) + cfg.max_queue
