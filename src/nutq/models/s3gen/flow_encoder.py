"""S3Gen flow encoder: speech-token embeddings (25 Hz) -> 512-d features at the mel rate (50 Hz).

`UpsampleConformerEncoder` reproduces the official `flow.encoder` (CosyVoice 2 style): a linear
input layer with ESPnet relative positions, a 3-token look-ahead convolution, 6 pre-LN Conformer
layers without convolution module or macaron FFN, nearest x2 upsampling with a causal conv, a second
input layer and 4 more Conformer layers. Attention is full-context (bidirectional) with a key
padding mask, so the encoder is not causal: re-running it on a longer prefix changes earlier frames.

State-dict keys equal the official `flow.encoder.*` keys with the `flow.encoder.` prefix removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FlowEncoderConfig",
    "FLOW_ENCODER_FULL",
    "FLOW_ENCODER_TINY",
    "UpsampleConformerEncoder",
    "rel_positional_encoding",
    "key_padding_mask",
]


@dataclass(frozen=True)
class FlowEncoderConfig:
    input_size: int = 512  # token embedding width
    d_model: int = 512
    n_heads: int = 8
    ffn_dim: int = 2048
    n_layers: int = 6  # Conformer layers at the token rate
    n_up_layers: int = 4  # Conformer layers at the mel rate
    pre_lookahead_len: int = 3  # tokens of right context seen by `pre_lookahead_layer`
    up_stride: int = 2  # mel frames per token

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


FLOW_ENCODER_FULL = FlowEncoderConfig()
# Tiny: same key structure, small widths and fewer layers, for CPU parity tests.
FLOW_ENCODER_TINY = FlowEncoderConfig(
    input_size=64, d_model=64, n_heads=4, ffn_dim=128, n_layers=2, n_up_layers=2
)


def key_padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) lengths -> (B, max_len) bool, True on valid positions."""
    return torch.arange(max_len, device=lengths.device) < lengths.to(torch.long).unsqueeze(1)


def rel_positional_encoding(size: int, d_model: int, device=None, dtype=torch.float32) -> Tensor:
    """ESPnet relative positional encoding for `size` frames: (1, 2*size-1, d_model).

    Row j encodes relative position (size-1-j), i.e. from +(size-1) down to -(size-1); even
    channels hold sin, odd channels cos. Computed in fp32 (as the official table is) and cast.
    """
    pos = torch.arange(size - 1, -size, -1, device=device, dtype=torch.float32).unsqueeze(1)  # (2T-1, 1)
    inv_freq = torch.exp(
        torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * -(math.log(10000.0) / d_model)
    )
    angle = pos * inv_freq  # (2T-1, d/2)
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(1)  # (2T-1, d), interleaved sin/cos
    return pe.unsqueeze(0).to(dtype)


class LinearInput(nn.Module):
    """Linear + LayerNorm, scaled by sqrt(d_model); also returns the relative position table."""

    def __init__(self, idim: int, d_model: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(idim, d_model), nn.LayerNorm(d_model, eps=1e-5))
        self.d_model = d_model
        self.xscale = math.sqrt(d_model)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.out(x) * self.xscale
        pos_emb = rel_positional_encoding(x.size(1), self.d_model, x.device, x.dtype)
        return x, pos_emb


class PreLookaheadLayer(nn.Module):
    """Residual conv that lets each token see `lookahead` tokens to its right (zeros past the end)."""

    def __init__(self, channels: int, lookahead: int):
        super().__init__()
        self.lookahead = lookahead
        self.conv1 = nn.Conv1d(channels, channels, kernel_size=lookahead + 1)
        self.conv2 = nn.Conv1d(channels, channels, kernel_size=3)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, T, C)
        h = x.transpose(1, 2)  # (B, C, T)
        h = F.leaky_relu(self.conv1(F.pad(h, (0, self.lookahead))), 0.01)
        h = self.conv2(F.pad(h, (2, 0)))  # causal k3
        return h.transpose(1, 2) + x  # (B, T, C)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by `stride`, then a causal conv of kernel 2*stride+1."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv1d(channels, channels, kernel_size=2 * stride + 1)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, C, T) -> (B, C, stride*T)
        x = F.interpolate(x, scale_factor=float(self.stride), mode="nearest")
        return self.conv(F.pad(x, (2 * self.stride, 0)))


class RelPositionAttention(nn.Module):
    """Transformer-XL style attention: scores = (q+u)·k + rel_shift((q+v)·p), scaled by 1/sqrt(d_k)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.h = n_heads
        self.d_k = d_model // n_heads
        # Parameters first so the state-dict order matches the official listing.
        self.pos_bias_u = nn.Parameter(torch.zeros(n_heads, self.d_k))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_heads, self.d_k))
        self.linear_q = nn.Linear(d_model, d_model)
        self.linear_k = nn.Linear(d_model, d_model)
        self.linear_v = nn.Linear(d_model, d_model)
        self.linear_out = nn.Linear(d_model, d_model)
        self.linear_pos = nn.Linear(d_model, d_model, bias=False)

    @staticmethod
    def rel_shift(bd: Tensor) -> Tensor:
        """(B, H, T, 2T-1) indexed by relative position column -> (B, H, T, T) indexed by key.

        Column c of `bd` holds relative position T-1-c. Query i and key j need position i-j, i.e.
        column T-1-i+j = (T-1) + i*(2T-2) + j in row-major storage of a row of 2T-1 entries: a
        strided view with row stride 2T-2 and offset T-1, no copy.
        """
        b, h, t, n = bd.shape
        bd = bd.contiguous()
        s_b, s_h, _, _ = bd.stride()
        return bd.as_strided((b, h, t, t), (s_b, s_h, n - 1, 1), bd.storage_offset() + t - 1)

    def forward(self, x: Tensor, pos_emb: Tensor, key_mask: Tensor | None) -> Tensor:
        b, t, _ = x.shape
        q = self.linear_q(x).view(b, t, self.h, self.d_k)  # (B, T, H, dk)
        k = self.linear_k(x).view(b, t, self.h, self.d_k).transpose(1, 2)  # (B, H, T, dk)
        v = self.linear_v(x).view(b, t, self.h, self.d_k).transpose(1, 2)  # (B, H, T, dk)
        p = self.linear_pos(pos_emb).view(pos_emb.size(0), -1, self.h, self.d_k)  # (1, 2T-1, H, dk)
        p = p.transpose(1, 2)  # (1, H, 2T-1, dk)
        q_u = (q + self.pos_bias_u).transpose(1, 2)  # (B, H, T, dk)
        q_v = (q + self.pos_bias_v).transpose(1, 2)
        # The positional term is an additive bias of SDPA, which computes (q+u)·k/sqrt(dk), the
        # softmax and the weighted sum in one fused kernel: no explicit (B, H, T, T) scores and
        # weights. Padded keys get -inf; every query has at least one real key (lengths >= 1).
        # On CPU (torch 2.13) SDPA picks its flash kernel for padded and unpadded rows alike
        # (`torch._fused_sdp_choice`); its online softmax sums keys in blocks that depend on T, so
        # a padded row differs from its solo render by rounding, as the explicit form's matmuls do
        # (the same size: tests/test_vocoder_batch.py). On a full-size-like layer it is 10-30%
        # faster on one CPU thread (T = 300 / 700).
        bias = self.rel_shift(torch.matmul(q_v, p.transpose(-2, -1))) / math.sqrt(self.d_k)  # (B, H, T, T)
        if key_mask is not None:
            bias = bias.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        out = F.scaled_dot_product_attention(q_u, k, v, attn_mask=bias.to(q_u.dtype))
        return self.linear_out(out.transpose(1, 2).reshape(b, t, self.h * self.d_k))  # (B, T, H*dk)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, ffn_dim: int):
        super().__init__()
        self.w_1 = nn.Linear(d_model, ffn_dim)
        self.w_2 = nn.Linear(ffn_dim, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(F.silu(self.w_1(x)))


class ConformerLayer(nn.Module):
    """Pre-LN block: x + MHA(LN(x)), then x + FFN(LN(x)). LayerNorm eps 1e-12 as in the official code."""

    def __init__(self, cfg: FlowEncoderConfig):
        super().__init__()
        self.self_attn = RelPositionAttention(cfg.d_model, cfg.n_heads)
        self.feed_forward = FeedForward(cfg.d_model, cfg.ffn_dim)
        self.norm_ff = nn.LayerNorm(cfg.d_model, eps=1e-12)
        self.norm_mha = nn.LayerNorm(cfg.d_model, eps=1e-12)

    def forward(self, x: Tensor, pos_emb: Tensor, key_mask: Tensor | None) -> Tensor:
        x = x + self.self_attn(self.norm_mha(x), pos_emb, key_mask)
        return x + self.feed_forward(self.norm_ff(x))


class UpsampleConformerEncoder(nn.Module):
    """(B, T, input_size) token embeddings + lengths -> (B, up_stride*T, d_model) and valid-frame mask."""

    def __init__(self, cfg: FlowEncoderConfig = FLOW_ENCODER_FULL):
        super().__init__()
        self.cfg = cfg
        # Registration order = official state-dict order.
        self.embed = LinearInput(cfg.input_size, cfg.d_model)
        self.after_norm = nn.LayerNorm(cfg.d_model, eps=1e-5)
        self.pre_lookahead_layer = PreLookaheadLayer(cfg.d_model, cfg.pre_lookahead_len)
        self.encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.n_layers))
        self.up_layer = Upsample(cfg.d_model, cfg.up_stride)
        self.up_embed = LinearInput(cfg.d_model, cfg.d_model)
        self.up_encoders = nn.ModuleList(ConformerLayer(cfg) for _ in range(cfg.n_up_layers))

    def forward(self, xs: Tensor, xs_lens: Tensor | None = None, *, isolate_rows: bool = False
                ) -> tuple[Tensor, Tensor]:
        """xs: (B, T, input_size); xs_lens: (B,) valid tokens (None = all valid).

        Returns h (B, up_stride*T, d_model) and mask (B, 1, up_stride*T) bool (True = valid frame).
        Padded positions are not zeroed (as in the official encoder); the mask only hides them as
        attention keys. That leaves one leak, kept by default for parity with the official padded
        batch: the look-ahead conv of a row's last tokens reads the padded positions (non-zero
        after the input layer's bias and LayerNorm) where an unpadded row reads zeros.
        `isolate_rows=True` zeroes them there, so that every valid frame of a padded row equals
        that row run alone (up to float rounding); with no padding it changes nothing.
        """
        b, t, _ = xs.shape
        if xs_lens is None:
            xs_lens = torch.full((b,), t, dtype=torch.long, device=xs.device)
        key_mask = key_padding_mask(xs_lens, t)  # (B, T)
        x, pos_emb = self.embed(xs)
        if isolate_rows:
            x = x * key_mask.unsqueeze(-1).to(x.dtype)
        x = self.pre_lookahead_layer(x)
        for layer in self.encoders:
            x = layer(x, pos_emb, key_mask)

        x = self.up_layer(x.transpose(1, 2)).transpose(1, 2)  # (B, 2T, C)
        up_lens = xs_lens * self.cfg.up_stride
        up_mask = key_padding_mask(up_lens, x.size(1))  # (B, 2T)
        x, pos_emb = self.up_embed(x)
        for layer in self.up_encoders:
            x = layer(x, pos_emb, up_mask)
        return self.after_norm(x), up_mask.unsqueeze(1)
