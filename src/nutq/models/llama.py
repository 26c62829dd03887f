"""Llama decoder blocks with a static, position-addressed KV cache.

Numerically this is Hugging Face's `LlamaModel` as T3 uses it (RMSNorm in fp32, SwiGLU MLP, RoPE
with llama3 frequency scaling, causal attention), rewritten so that the decode step is a small pure
function: keys/values are written into preallocated buffers at `input_pos`, nothing grows with
`torch.cat`, and no host sync happens inside `forward`. That is what lets the engine capture the
step in a CUDA graph and batch sessions into cache rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LlamaConfig", "KVCache", "KVView", "LlamaBackbone", "llama3_inv_freq"]


@dataclass(frozen=True)
class LlamaConfig:
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_layers: int = 30
    num_heads: int = 16
    num_kv_heads: int = 16
    head_dim: int = 64
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500_000.0
    # llama3 RoPE scaling (T3 uses it even though its sequences are short: it changes inv_freq).
    rope_factor: float = 8.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_pos: int = 8192
    vocab_size: int = 8  # `embed_tokens` exists in the official file but T3 never uses it

    def __post_init__(self):
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {self.head_dim}")


def llama3_inv_freq(cfg: LlamaConfig) -> torch.Tensor:
    """Rotary inverse frequencies (head_dim/2,) with llama3 scaling, in float32.

    Wavelengths longer than original_max_pos/low_freq_factor are slowed by `factor`, shorter than
    original_max_pos/high_freq_factor are kept, and the band between is interpolated smoothly.
    """
    d = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    if cfg.rope_factor == 1.0:
        return inv
    low_wavelen = cfg.rope_original_max_pos / cfg.rope_low_freq_factor
    high_wavelen = cfg.rope_original_max_pos / cfg.rope_high_freq_factor
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > low_wavelen, inv / cfg.rope_factor, inv)
    smooth = (cfg.rope_original_max_pos / wavelen - cfg.rope_low_freq_factor) / (
        cfg.rope_high_freq_factor - cfg.rope_low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / cfg.rope_factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


class _KVShape:
    """Shape accessors shared by a cache and a view of some of its rows (k: (L, B, H, S, D))."""

    k: torch.Tensor

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def batch(self) -> int:
        return self.k.shape[1]


class KVCache(_KVShape, nn.Module):
    """Preallocated keys/values for every layer: (layers, batch, kv_heads, max_len, head_dim).

    Rows are whatever the caller makes them (a session's two CFG rows, or many sessions' rows in a
    pool). Positions are absolute: a step at position p writes slot p and reads slots <= p.
    Buffers are non-persistent so they never appear in a state dict.
    """

    def __init__(self, cfg: LlamaConfig, batch: int, max_len: int, *, device=None, dtype=torch.float32):
        super().__init__()
        shape = (cfg.num_layers, batch, cfg.num_kv_heads, max_len, cfg.head_dim)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)

    def rows(self, start: int, n: int) -> "KVView":
        """A view of batch rows [start, start+n): a session's slot in a pooled cache."""
        if start < 0 or n < 1 or start + n > self.batch:
            raise IndexError(f"rows [{start}, {start + n}) outside a cache of {self.batch} rows")
        return KVView(self.k[:, start:start + n], self.v[:, start:start + n])


class KVView(_KVShape):
    """Rows of a `KVCache` (views, no copy) usable wherever a cache is: writes land in the pool."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor):
        self.k, self.v = k, v


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 and cast back before the scale, as the reference does: in bf16 the
        # order matters for bit-level agreement.
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        h, kvh, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, h * d, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, kvh * d, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, kvh * d, bias=False)
        self.o_proj = nn.Linear(h * d, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, layer: int, cache: KVCache, input_pos, mask, kv_len, probe_heads=None,
                probe_rows: slice = slice(0, 1)):
        """Returns (out, probe): `probe` is the attention weights (R, len(heads), T, kv_len) of the
        batch rows `probe_rows` for the requested heads, computed from q and the cached k (the
        alignment guard reads them), or None. Only these rows are materialised; the attention
        itself stays on the fused kernel.

        `input_pos` is (T,) when every row sits at the same positions, or (B, T) per row (sessions
        batched at different lengths): then each row's keys/values are written at its own positions.
        """
        B, T, _ = x.shape
        cfg = self.cfg
        q = self.q_proj(x).view(B, T, cfg.num_heads, cfg.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(B, T, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        kc, vc = cache.k[layer], cache.v[layer]  # (B, KVH, S, D) views into the cache
        if input_pos.dim() == 1:
            kc.index_copy_(2, input_pos, k.to(kc.dtype))
            vc.index_copy_(2, input_pos, v.to(vc.dtype))
        else:
            # A position tensor, not host slicing, so that one captured graph serves any positions.
            # Advanced-index assignment (index_put_) rather than scatter_: on CPU, scatter_ into a
            # bf16 cache rewrites the whole cache tensor (measured 11 ms per call for 16 rows of
            # 512 positions, against 0.01 ms here), which made an 8-session bf16 step 5x a
            # 4-session one. Rows (B, 1) and positions (B, T) broadcast to (B, T): the values are
            # then laid out (B, T, KVH, D).
            rows = torch.arange(B, device=input_pos.device)[:, None]
            kc[rows, :, input_pos] = k.transpose(1, 2).to(kc.dtype)
            vc[rows, :, input_pos] = v.transpose(1, 2).to(vc.dtype)
        keys, values = kc[:, :, :kv_len], vc[:, :, :kv_len]
        rep = cfg.num_heads // cfg.num_kv_heads
        if rep > 1:
            keys = keys.repeat_interleave(rep, dim=1)
            values = values.repeat_interleave(rep, dim=1)
        # A prompt from position 0 (T == kv_len, shared positions) is plain causal: SDPA's is_causal
        # selects kernels a boolean mask rules out (flash); the probe below still uses the mask.
        causal = mask is not None and T > 1 and T == kv_len and input_pos.dim() == 1
        out = F.scaled_dot_product_attention(q, keys.to(q.dtype), values.to(q.dtype),
                                             attn_mask=None if causal else mask, is_causal=causal)
        probe = None
        if probe_heads:
            # Rows by a slice and heads by host ints (views stacked): no index tensor is built and
            # copied to the device at every layer of every step.
            qh = torch.stack([q[probe_rows, h] for h in probe_heads], dim=1).float()  # (R, n, T, D)
            kh = torch.stack([keys[probe_rows, h] for h in probe_heads], dim=1).float()  # (R, n, S, D)
            scores = (qh @ kh.transpose(-1, -2)) * cfg.head_dim ** -0.5  # (R, n, T, S)
            if mask is not None:
                # A per-row mask is cut to the probed rows; a shared one broadcasts over them.
                m = mask[probe_rows] if mask.dim() == 4 and mask.shape[0] > 1 else mask
                scores = scores.masked_fill(~m, float("-inf"))
            probe = scores.softmax(dim=-1)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, cfg.num_heads * cfg.head_dim)), probe


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, layer, cache, input_pos, mask, kv_len, probe_heads=None, probe_rows=slice(0, 1)):
        h, probe = self.self_attn(self.input_layernorm(x), cos, sin, layer, cache, input_pos, mask, kv_len,
                                  probe_heads, probe_rows)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), probe


class LlamaBackbone(nn.Module):
    """`tfmr.*` of the official T3 file: layers + final norm (+ the unused `embed_tokens`)."""

    FP32_BUFFERS = ("inv_freq",)  # kept in fp32 when the weights load in bf16/fp16 (models/loading.py)

    def __init__(self, cfg: LlamaConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.register_buffer("inv_freq", llama3_inv_freq(cfg), persistent=False)

    def init_buffers(self, device: torch.device) -> None:
        """Recompute RoPE frequencies after a meta-device build (they are not in the file)."""
        self.inv_freq = llama3_inv_freq(self.cfg).to(device)

    def rope(self, input_pos: torch.Tensor, dtype: torch.dtype):
        """cos/sin for absolute positions, computed in fp32 then cast: (1, 1, T, D) for positions
        (T,) shared by all rows, (B, 1, T, D) for per-row positions (B, T)."""
        freqs = input_pos.float()[..., None] * self.inv_freq.float()  # (T, D/2) or (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
        if input_pos.dim() == 1:
            return cos[None, None], sin[None, None]
        return cos[:, None], sin[:, None]

    def forward(
        self,
        x: torch.Tensor,
        input_pos: torch.Tensor,
        cache: KVCache,
        *,
        kv_len: int | None = None,
        mask: torch.Tensor | None = None,
        probes: tuple[tuple[int, int], ...] = (),
        probe_rows: slice | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, C) at absolute positions `input_pos` -> final-normed hidden (B, T, C).

        `input_pos` is (T,) when all rows share positions (one session's CFG rows), or (B, T) with
        each row at its own positions (sessions of different lengths batched together).

        `kv_len` (a Python int) limits attention to cache slots [0, kv_len): the eager path passes
        the true length so it never touches unused slots. A graph-captured step passes
        `kv_len=None` with a precomputed boolean `mask` (B or 1, 1, T, max_len) instead, keeping
        every shape static. With neither, a causal mask over the whole cache is built here.

        `probes` lists (layer, head) pairs whose attention weights to return as well, in probe
        order: with `probe_rows=None` those of row 0, as (hidden, weights (len(probes), T, kv_len));
        with a slice of rows, (hidden, weights (R, len(probes), T, kv_len)) for those R rows.
        """
        # A single query at a shared position, given its true kv_len, attends to every slot: no
        # mask, so SDPA can take its fastest (unmasked) kernel on the decode step. Rows at their
        # own positions always need one.
        single_step = kv_len is not None and x.shape[1] == 1 and input_pos.dim() == 1
        if kv_len is None:
            kv_len = cache.max_len
        if mask is None and not single_step:
            k_pos = torch.arange(kv_len, device=x.device)
            mask = k_pos <= input_pos[..., None]  # (T, kv_len) or (B, T, kv_len)
            mask = mask[None, None] if input_pos.dim() == 1 else mask[:, None]  # (1 or B, 1, T, kv_len)
        cos, sin = self.rope(input_pos, x.dtype)
        by_layer: dict[int, list[int]] = {}
        for layer_idx, head in probes:
            by_layer.setdefault(layer_idx, []).append(head)
        rows = slice(0, 1) if probe_rows is None else probe_rows
        found: dict[tuple[int, int], torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            x, probe = layer(x, cos, sin, i, cache, input_pos, mask, kv_len, tuple(by_layer.get(i, ())), rows)
            if probe is not None:
                for j, head in enumerate(by_layer[i]):
                    found[(i, head)] = probe[:, j]  # (R, T, kv_len)
        x = self.norm(x)
        if probes:
            weights = torch.stack([found[p] for p in probes], dim=1)  # (R, len(probes), T, kv_len)
            return x, weights[0] if probe_rows is None else weights
        return x
