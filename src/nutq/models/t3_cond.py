"""T3's conditioning encoder: [speaker(1) | perceiver prompt(Q) | emotion(1)] embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CondEncoder", "Perceiver"]


class PerceiverAttention(nn.Module):
    """`AttentionBlock2`: one LayerNorm shared by the query and key/value inputs, residual on q."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        # Attention dropout in train mode only. 0 here; the T3 trainer sets the official training
        # value (0.2, the official block's default), so inference never depends on the mode.
        self.attn_dropout = 0.0
        if dim % heads:
            raise ValueError(f"perceiver dim {dim} not divisible by {heads} heads")
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.proj_out = nn.Linear(dim, dim)

    def forward(self, x_q: torch.Tensor, x_kv: torch.Tensor) -> torch.Tensor:
        B, Tq, C = x_q.shape
        h = self.heads
        q = self.to_q(self.norm(x_q)).view(B, Tq, h, C // h).transpose(1, 2)  # (B, h, Tq, C/h)
        kv = self.norm(x_kv)
        k = self.to_k(kv).view(B, -1, h, C // h).transpose(1, 2)
        v = self.to_v(kv).view(B, -1, h, C // h).transpose(1, 2)
        p = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # scale 1/sqrt(C/h), no mask
        return x_q + self.proj_out(out.transpose(1, 2).reshape(B, Tq, C))


class Perceiver(nn.Module):
    """Resamples the prompt's speech embeddings to a fixed number of query tokens.

    The same attention block runs twice: cross-attention from the learned queries to the prompt,
    then self-attention over the result.
    """

    def __init__(self, dim: int, num_queries: int, heads: int):
        super().__init__()
        self.pre_attention_query = nn.Parameter(torch.zeros(1, num_queries, dim))
        self.attn = PerceiverAttention(dim, heads)

    def forward(self, prompt_emb: torch.Tensor) -> torch.Tensor:
        q = self.pre_attention_query.expand(prompt_emb.shape[0], -1, -1)
        x = self.attn(q, prompt_emb)
        return self.attn(x, x)


class CondEncoder(nn.Module):
    """`cond_enc.*`: speaker projection, perceiver over the prompt, emotion (exaggeration) scalar."""

    def __init__(self, dim: int, speaker_dim: int, num_queries: int, heads: int):
        super().__init__()
        self.speaker_dim = speaker_dim
        self.spkr_enc = nn.Linear(speaker_dim, dim)
        self.emotion_adv_fc = nn.Linear(1, dim, bias=False)
        self.perceiver = Perceiver(dim, num_queries, heads)

    def forward(self, speaker_emb: torch.Tensor, prompt_emb: torch.Tensor | None, emotion: torch.Tensor) -> torch.Tensor:
        """speaker_emb (B, 256), prompt_emb (B, P, C) or None, emotion (B,) -> (B, 1+Q+1, C)."""
        spk = self.spkr_enc(speaker_emb.reshape(-1, self.speaker_dim))[:, None]  # (B, 1, C)
        parts = [spk]
        if prompt_emb is not None:
            parts.append(self.perceiver(prompt_emb))
        emo = self.emotion_adv_fc(emotion.reshape(-1, 1, 1).to(spk.dtype))  # (B, 1, C)
        parts.append(emo)
        return torch.cat(parts, dim=1)
