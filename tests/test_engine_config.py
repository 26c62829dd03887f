"""`EngineConfig`'s defaults and how they resolve per device (CUDA mocked: the logic runs on CPU)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from nutq.engine.config import CPU_SESSIONS, EngineConfig, kv_bytes_per_slot, slots_for_memory
from nutq.engine.engine import Engine
from nutq.errors import ClientError


def test_auto_resolves_to_cpu_with_fp32_and_fixed_slots(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    got = EngineConfig().resolve()
    assert (got.device, got.dtype, got.flow_dtype, got.max_sessions) == ("cpu", None, None, CPU_SESSIONS)
    assert got.capacity >= 32  # the server admits at least 32 streams with the defaults


def test_auto_resolves_to_cuda_with_bf16_and_slots_from_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    got = EngineConfig().resolve()
    assert (got.device, got.dtype, got.flow_dtype, got.max_sessions) == ("cuda", "bf16", "bf16", None)
    explicit = EngineConfig(device="cuda:1", dtype="fp32", flow_dtype="fp16", max_sessions=3).resolve()
    assert (explicit.device, explicit.dtype, explicit.flow_dtype, explicit.max_sessions) == ("cuda:1", "fp32", "fp16", 3)


def test_bad_choices_are_client_errors():
    # int8/int4 are T3 choices (weight-only quantized linears), never the flow's
    for bad in (dict(dtype="int3"), dict(flow_dtype="int8"), dict(max_sessions=0), dict(step="fast"),
                dict(max_queue=-1), dict(backend="tvm"), dict(backend="onnxruntime")):
        with pytest.raises(ClientError):
            EngineConfig(**bad)
    with pytest.raises(ClientError, match="device"):
        EngineConfig(device="tpu").resolve()
    assert EngineConfig(dtype="int8").resolve().dtype == "int8"


def test_kv_pool_is_sized_from_free_gpu_memory(monkeypatch, tiny_checkpoint):
    llama = SimpleNamespace(num_layers=30, num_kv_heads=16, head_dim=64)
    per_slot = kv_bytes_per_slot(30, 16, 64, 1500, torch.bfloat16)
    assert per_slot == 2 * 30 * 2 * 16 * 64 * 1500 * 2  # k and v, layers, CFG rows, heads, dims, positions, bytes
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * 2**30, 80 * 2**30))
    fake = SimpleNamespace(t3=SimpleNamespace(cfg=SimpleNamespace(llama=llama),
                                              speech_head=SimpleNamespace(weight=torch.zeros(1, dtype=torch.bfloat16))),
                           config=EngineConfig(max_cache_len=1500), device=torch.device("cuda"))
    assert Engine._slots_from_gpu_memory(fake) == 20 * 2**30 // per_slot  # half the free memory
    assert slots_for_memory(10**15, per_slot) == 64 and slots_for_memory(1, per_slot) == 1


def test_planned_capacity_is_what_the_engine_will_admit(monkeypatch, tiny_checkpoint):
    """Resolved before loading (what Ray's max_ongoing_requests is set from), equal to the loaded
    engine's own slots + queue on CPU, and on (mocked) CUDA sized by the engine's formula."""
    from nutq.checkpoints.files import resolve
    from nutq.engine.capacity import planned_capacity
    from nutq.engine.config import DEFAULT_QUEUE
    from nutq.models.registry import configs_from_sidecar

    files = resolve(tiny_checkpoint, allow_download=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert planned_capacity(EngineConfig(), files) == CPU_SESSIONS + DEFAULT_QUEUE
    assert planned_capacity(EngineConfig(max_sessions=3, max_queue=5), files) == 8
    engine = Engine(files, EngineConfig(max_queue=7))
    assert planned_capacity(EngineConfig(max_queue=7), files) == engine.capacity == CPU_SESSIONS + 7

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    llama = configs_from_sidecar(files.sidecar)["t3"].llama
    weights = sum(p.stat().st_size for p in (files.t3, files.s3gen, files.ve))
    per_slot = kv_bytes_per_slot(llama.num_layers, llama.num_kv_heads, llama.head_dim, 1536, torch.bfloat16)  # 1500 aligned
    free = weights + 20 * per_slot  # room for 10 slots in half of it once the weights are in
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    expected = slots_for_memory(free - weights, per_slot) + DEFAULT_QUEUE  # bf16 on CUDA, weights not loaded yet
    assert planned_capacity(EngineConfig(), files) == expected
    assert planned_capacity(EngineConfig(), files) != planned_capacity(EngineConfig(dtype="fp32"), files)
    # ... and the loaded engine, whose weights are then in use, sizes its pool the same way
    fake = SimpleNamespace(t3=SimpleNamespace(cfg=SimpleNamespace(llama=llama),
                                              speech_head=SimpleNamespace(weight=torch.zeros(1, dtype=torch.bfloat16))),
                           config=EngineConfig().resolve(), device=torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free - weights, 2 * free))
    assert Engine._slots_from_gpu_memory(fake) + DEFAULT_QUEUE == expected


def test_cache_length_is_rounded_up_to_a_multiple_of_64(tiny_checkpoint):
    assert [EngineConfig(max_cache_len=n).resolve().max_cache_len for n in (1500, 1536, 128, 129, 2)] == \
        [1536, 1536, 128, 192, 64]
    from nutq.engine.batched_step import span_ladder
    from nutq.tts import TTS

    tts = TTS.from_local(tiny_checkpoint, max_sessions=1, max_cache_len=100)
    try:
        assert tts.pool.max_len == 128 and tts.engine.planner.max_cache_len == 128
        assert span_ladder(tts.pool.max_len)[-1] == 128  # the top graph span is the aligned length
    finally:
        tts.close()
