"""S3Gen CFM estimator: the 1-D U-Net (`ConditionalDecoder`) that predicts the flow velocity.

Input per frame: concat(x_t, mu, speaker, cond) = 4 x 80 channels. The network is one "down" stage
(causal resnet + transformer blocks + causal conv, no real downsampling), `n_mid` mid stages and one
"up" stage that concatenates the down stage's output as a skip; then a final causal block and a 1x1
projection back to 80 mel channels. Convolutions are causal (left padding only) but the transformer
blocks attend in both directions, with padded frames hidden as keys by an additive -1e10 bias.

The meanflow variant (the distilled 2-step decoder of `s3gen_meanflow.safetensors`) embeds t and
r with the same sinusoid + `time_mlp`, concatenates the two and mixes them with one bias-free
linear layer (`time_embed_mixer`, 2·time_dim -> time_dim, registered last as in the official
module); the mixed embedding is what every resnet block receives. Nothing else differs.

State-dict keys equal the official `flow.decoder.estimator.*` keys without that prefix, including
the diffusers names inside the transformer blocks (`attn1.to_q`, `ff.net.0.proj`, `norm3`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["EstimatorConfig", "ESTIMATOR_FULL", "ESTIMATOR_TINY", "ConditionalDecoder", "timestep_embedding"]


@dataclass(frozen=True)
class EstimatorConfig:
    n_mels: int = 80
    channels: int = 256  # U-Net width (the official `channels=[256]`: a single down/up stage)
    n_heads: int = 8
    head_dim: int = 64
    n_blocks: int = 4  # transformer blocks per stage
    n_mid: int = 12  # mid stages
    ff_mult: int = 4
    # The distilled (meanflow) decoder: the network also takes the end time r of the step and mixes
    # the embeddings of t and r (`time_embed_mixer`); it then predicts the average velocity over [t, r].
    meanflow: bool = False

    @property
    def in_channels(self) -> int:
        """x_t, mu, speaker embedding (broadcast over time) and cond, stacked on channels."""
        return 4 * self.n_mels

    @property
    def time_dim(self) -> int:
        return 4 * self.channels


ESTIMATOR_FULL = EstimatorConfig()
# Tiny: the official CFM hard-codes 80 mel channels, so n_mels stays; everything else is small.
ESTIMATOR_TINY = EstimatorConfig(channels=32, n_heads=2, head_dim=16, n_blocks=1, n_mid=2)


def timestep_embedding(t: Tensor, dim: int, scale: float = 1000.0) -> Tensor:
    """Sinusoidal embedding of flow time t in [0, 1]: (B,) -> (B, dim) fp32 = [sin | cos].

    Always fp32: the angles reach 1000 rad, and a bf16 t (as the official code has when the model
    runs in bf16) would put the high-frequency channels far off. In fp32 the operation order below
    equals the official one, bit for bit.
    """
    t = t.reshape(-1).float()
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device).float() * -(math.log(10000) / (half - 1)))
    arg = scale * t.unsqueeze(1) * freqs.unsqueeze(0)  # (B, half)
    return torch.cat((arg.sin(), arg.cos()), dim=-1)


class TimestepMLP(nn.Module):
    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class CausalConv1d(nn.Conv1d):
    """Conv1d that pads kernel_size-1 zeros on the left only, so frame i sees frames <= i."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int):
        super().__init__(in_ch, out_ch, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, (self.kernel_size[0] - 1, 0)))


class SwapTC(nn.Module):
    """(B, C, T) <-> (B, T, C), so a LayerNorm can normalize over channels inside a Sequential."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(1, 2)


class CausalBlock(nn.Module):
    """CausalConv1d k3 -> LayerNorm over channels -> Mish, on masked input, masked output."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        # Indices 0 (conv) and 2 (LayerNorm) carry the official key names `block.0` / `block.2`.
        self.block = nn.Sequential(
            CausalConv1d(dim, dim_out, 3), SwapTC(), nn.LayerNorm(dim_out), SwapTC(), nn.Mish()
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.block(x * mask) * mask


class CausalResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, time_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Mish(), nn.Linear(time_dim, dim_out))
        self.block1 = CausalBlock(dim, dim_out)
        self.block2 = CausalBlock(dim_out, dim_out)
        self.res_conv = nn.Conv1d(dim, dim_out, 1)

    def forward(self, x: Tensor, mask: Tensor, t_emb: Tensor) -> Tensor:
        h = self.block1(x, mask) + self.mlp(t_emb).unsqueeze(-1)  # (B, C, T) + (B, C, 1)
        h = self.block2(h, mask)
        return h + self.res_conv(x * mask)  # not re-masked, as in the official block


class SelfAttention(nn.Module):
    """Multi-head self-attention (diffusers `Attention` names): q/k/v without bias, out with bias."""

    def __init__(self, dim: int, n_heads: int, head_dim: int):
        super().__init__()
        self.n_heads = n_heads
        inner = n_heads * head_dim
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def forward(self, x: Tensor, bias: Tensor | None) -> Tensor:
        b, t, _ = x.shape
        q = self.to_q(x).view(b, t, self.n_heads, -1).transpose(1, 2)  # (B, H, T, dh)
        k = self.to_k(x).view(b, t, self.n_heads, -1).transpose(1, 2)
        v = self.to_v(x).view(b, t, self.n_heads, -1).transpose(1, 2)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, T, dh)
        return self.to_out[0](o.transpose(1, 2).reshape(b, t, -1))  # (B, T, H*dh) -> (B, T, C)


class GELUProj(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x))  # exact (erf) GELU


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        # [GELU projection, dropout slot (no parameters), output] -> keys net.0.proj / net.2.
        self.net = nn.ModuleList([GELUProj(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim)])

    def forward(self, x: Tensor) -> Tensor:
        for m in self.net:
            x = m(x)
        return x


class TransformerBlock(nn.Module):
    """x + Attn(LN(x)), then x + FF(LN(x)); the official block's unused norm2/attn2 do not exist."""

    def __init__(self, cfg: EstimatorConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.channels)
        self.attn1 = SelfAttention(cfg.channels, cfg.n_heads, cfg.head_dim)
        self.norm3 = nn.LayerNorm(cfg.channels)
        self.ff = FeedForward(cfg.channels, cfg.ff_mult)

    def forward(self, x: Tensor, bias: Tensor | None) -> Tensor:  # x: (B, T, C)
        x = self.attn1(self.norm1(x), bias) + x
        return self.ff(self.norm3(x)) + x


def _stage(cfg: EstimatorConfig, dim_in: int, with_conv: bool) -> nn.ModuleList:
    """[resnet, transformer blocks(, causal conv)] as the official nested ModuleLists index them."""
    mods: list[nn.Module] = [
        CausalResnetBlock(dim_in, cfg.channels, cfg.time_dim),
        nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_blocks)),
    ]
    if with_conv:
        mods.append(CausalConv1d(cfg.channels, cfg.channels, 3))
    return nn.ModuleList(mods)


class ConditionalDecoder(nn.Module):
    """v = f(x_t, mask, mu, t, spks, cond): all (B, 80, T) except t (B,) and spks (B, 80)."""

    def __init__(self, cfg: EstimatorConfig = ESTIMATOR_FULL):
        super().__init__()
        self.cfg = cfg
        c = cfg.channels
        self.time_mlp = TimestepMLP(cfg.in_channels, cfg.time_dim)
        self.down_blocks = nn.ModuleList([_stage(cfg, cfg.in_channels, with_conv=True)])
        self.mid_blocks = nn.ModuleList(_stage(cfg, c, with_conv=False) for _ in range(cfg.n_mid))
        self.up_blocks = nn.ModuleList([_stage(cfg, 2 * c, with_conv=True)])
        self.final_block = CausalBlock(c, c)
        self.final_proj = nn.Conv1d(c, cfg.n_mels, 1)
        if cfg.meanflow:
            self.time_embed_mixer = nn.Linear(2 * cfg.time_dim, cfg.time_dim, bias=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.final_proj.weight.dtype

    def _time_embedding(self, t: Tensor, r: Tensor | None, dtype: torch.dtype) -> Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.cfg.in_channels).to(dtype))
        if not self.cfg.meanflow:
            if r is not None:
                raise ValueError("this estimator is not a meanflow estimator: it takes no end time r")
            return emb
        if r is None:
            raise ValueError("a meanflow estimator needs the step's end time r")
        emb_r = self.time_mlp(timestep_embedding(r, self.cfg.in_channels).to(dtype))
        return self.time_embed_mixer(torch.cat([emb, emb_r], dim=1))

    @staticmethod
    def _transformers(blocks: nn.ModuleList, x: Tensor, bias: Tensor | None) -> Tensor:
        x = x.transpose(1, 2)  # (B, T, C)
        for blk in blocks:
            x = blk(x, bias)
        return x.transpose(1, 2)  # (B, C, T)

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        mu: Tensor,
        t: Tensor,
        spks: Tensor,
        cond: Tensor,
        *,
        r: Tensor | None = None,
        padded: bool = True,
    ) -> Tensor:
        """mask: (B, 1, T), 1 on valid frames; t: (B,) flow time (kept in fp32 for the embedding);
        r: (B,) the end time of the step, required by (and only accepted by) a meanflow estimator.

        `padded=False` promises that the mask is all ones, so attention runs without a bias (the
        fast, flash-eligible path); the result is the same.
        """
        t_emb = self._time_embedding(t, r, x.dtype)  # (B, time_dim)
        x = torch.cat([x, mu, spks.unsqueeze(-1).expand(-1, -1, x.size(-1)), cond], dim=1)  # (B, 320, T)
        mask = mask.to(x.dtype)
        # Key-padding bias (B, 1, 1, T); in fp16 -1e10 becomes -inf, which softmax handles.
        bias = ((1.0 - mask) * -1.0e10).unsqueeze(1) if padded else None

        resnet, blocks, conv = self.down_blocks[0]
        x = resnet(x, mask, t_emb)
        skip = self._transformers(blocks, x, bias)
        x = conv(skip * mask)

        for resnet, blocks in self.mid_blocks:
            x = self._transformers(blocks, resnet(x, mask, t_emb), bias)

        resnet, blocks, conv = self.up_blocks[0]
        x = resnet(torch.cat([x, skip], dim=1), mask, t_emb)  # (B, 2C, T) -> (B, C, T)
        x = conv(self._transformers(blocks, x, bias) * mask)

        x = self.final_block(x, mask)
        return self.final_proj(x * mask) * mask
