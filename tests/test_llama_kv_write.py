"""The per-row K/V write (rows at their own positions, the batched step and the graph path) lands
exactly where a one-row-at-a-time write does, and nowhere else, in fp32 and in bf16.

The comparison is bitwise: K/V at a position depend only on that row's input and position (the
projection and RoPE), and both runs use the same batch shape, so any difference is a misplaced
write. bf16 matters here: the write used `scatter_`, which on CPU rewrote the whole bf16 cache on
every call; the replacement must keep the same placement.
"""

from __future__ import annotations

import pytest
import torch

from nutq.models.llama import KVCache, LlamaBackbone, LlamaConfig
from nutq.models.random_init import randomize_module

CFG = LlamaConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=4, head_dim=8)
MAX_LEN = 24


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T", [1, 3])
def test_rows_at_their_own_positions_write_only_their_own_cells(dtype, T):
    torch.manual_seed(0)
    model = randomize_module(LlamaBackbone(CFG), 0).to(dtype).eval()
    model.init_buffers(torch.device("cpu"))
    B = 4
    x = torch.randn(B, T, CFG.hidden_size).to(dtype)
    starts = torch.tensor([0, 7, 3, MAX_LEN - T])  # a different position per row, the last ending at the cache's end
    pos = starts[:, None] + torch.arange(T)  # (B, T)
    # A pool of 6 rows, stepped through a view of rows [1, 5): rows 0 and 5 belong to others.
    pool = KVCache(CFG, 6, MAX_LEN, dtype=dtype)
    with torch.inference_mode():
        model(x, pos, pool.rows(1, B))
    touched = torch.zeros(CFG.num_layers, 6, CFG.num_kv_heads, MAX_LEN, CFG.head_dim, dtype=torch.bool)
    for b in range(B):
        ref = KVCache(CFG, B, MAX_LEN, dtype=dtype)
        with torch.inference_mode():
            model(x, pos[b], ref)  # every row at row b's positions: row b's K/V are the reference
        for p in pos[b].tolist():
            assert torch.equal(pool.k[:, 1 + b, :, p], ref.k[:, b, :, p])
            assert torch.equal(pool.v[:, 1 + b, :, p], ref.v[:, b, :, p])
            touched[:, 1 + b, :, p] = True
    assert pool.k[touched].abs().sum() > 0
    # Every other cell, in the view's rows and outside it, is untouched.
    assert not pool.k[~touched].any() and not pool.v[~touched].any()
