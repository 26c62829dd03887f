"""T3: the text-to-speech-token language model (Llama backbone with custom embeddings and heads).

Layout and numbers follow the official `t3_mtl23ls_v2.safetensors` (see docs/model.md, "T3").
The model is session-blind: it embeds, runs the backbone over a caller-owned `KVCache` and
projects to logits. CFG is two batch rows of the same utterance: row 0 conditional, row 1 with the
text embeddings zeroed (text *position* embeddings kept), everything else identical.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .llama import KVCache, LlamaBackbone, LlamaConfig
from .t3_cond import CondEncoder

__all__ = ["T3Config", "T3", "T3_FULL", "T3_TINY"]


@dataclass(frozen=True)
class T3Config:
    llama: LlamaConfig = field(default_factory=LlamaConfig)
    text_vocab: int = 2454
    speech_vocab: int = 8194
    max_text_tokens: int = 2048  # learned text positions: max_text_tokens + 2
    max_speech_tokens: int = 4096  # learned speech positions: max_speech_tokens + 4
    speaker_dim: int = 256
    prompt_len: int = 150  # speech-token prompt (6 s at 25 Hz)
    perceiver_queries: int = 32
    perceiver_heads: int = 4
    start_text: int = 255
    stop_text: int = 0
    start_speech: int = 6561
    stop_speech: int = 6562

    @property
    def dim(self) -> int:
        return self.llama.hidden_size

    @property
    def len_cond(self) -> int:
        """speaker(1) + perceiver queries + emotion(1): 34 for the official model."""
        return 1 + self.perceiver_queries + 1

    @property
    def num_valid_speech(self) -> int:
        """Ids 0..start_speech-1 are real S3 codes; BOS/EOS and the padding rows above are not."""
        return self.start_speech


T3_FULL = T3Config()
# Tiny: keeps every vocabulary (ids are fixed by the tokenizers) and enough layers/heads that the
# alignment heads (layers 9, 12, 13; heads up to 15) exist; widths are small.
T3_TINY = T3Config(
    llama=LlamaConfig(hidden_size=128, intermediate_size=256, num_layers=14, num_heads=16,
                      num_kv_heads=16, head_dim=8),
    max_text_tokens=512,
    max_speech_tokens=1024,
)


class LearnedPositions(nn.Module):
    def __init__(self, n: int, dim: int):
        super().__init__()
        self.emb = nn.Embedding(n, dim)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.emb(positions)


class T3(nn.Module):
    def __init__(self, cfg: T3Config = T3_FULL):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.tfmr = LlamaBackbone(cfg.llama)
        self.cond_enc = CondEncoder(d, cfg.speaker_dim, cfg.perceiver_queries, cfg.perceiver_heads)
        self.text_emb = nn.Embedding(cfg.text_vocab, d)
        self.speech_emb = nn.Embedding(cfg.speech_vocab, d)
        self.text_pos_emb = LearnedPositions(cfg.max_text_tokens + 2, d)
        self.speech_pos_emb = LearnedPositions(cfg.max_speech_tokens + 4, d)
        self.text_head = nn.Linear(d, cfg.text_vocab, bias=False)
        self.speech_head = nn.Linear(d, cfg.speech_vocab, bias=False)

    # ---- embeddings -------------------------------------------------------------------------
    def embed_speech(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """speech_emb(tokens) + speech_pos_emb(positions); shapes broadcast, (..., C)."""
        return self.speech_emb(tokens) + self.speech_pos_emb(positions)

    def conditioning(
        self, speaker_emb: torch.Tensor, prompt_tokens: torch.Tensor | None, emotion: torch.Tensor | float
    ) -> torch.Tensor:
        """(B, len_cond, C). `prompt_tokens` (B, P) are embedded with positions 0..P-1."""
        dev = self.speech_emb.weight.device
        speaker_emb = speaker_emb.to(dev, self.speech_emb.weight.dtype)
        prompt_emb = None
        if prompt_tokens is not None:
            prompt_tokens = prompt_tokens.to(dev)
            prompt_emb = self.embed_speech(prompt_tokens, torch.arange(prompt_tokens.shape[-1], device=dev))
        batch = speaker_emb.reshape(-1, self.cfg.speaker_dim).shape[0]
        emotion = torch.as_tensor(emotion, device=dev, dtype=self.speech_emb.weight.dtype).reshape(-1).expand(batch)
        return self.cond_enc(speaker_emb, prompt_emb, emotion)

    def text_embeds(self, text_ids: torch.Tensor, cfg_rows: bool) -> torch.Tensor:
        """text_ids (T,) with SOT/EOT -> (2, T, C) [cond, uncond] if cfg_rows else (1, T, C)."""
        pos = self.text_pos_emb(torch.arange(text_ids.shape[-1], device=text_ids.device))
        emb = self.text_emb(text_ids.reshape(1, -1))
        if cfg_rows:
            emb = torch.cat([emb, torch.zeros_like(emb)])  # uncond row: no text content
        return emb + pos

    def prefill_embeds(self, cond: torch.Tensor, text_ids: torch.Tensor, cfg_rows: bool = True) -> torch.Tensor:
        """[cond | text | BOS@0 | BOS@0] for each row, as the official loop feeds it.

        The official inference appends BOS once inside `prepare_input_embeds` and once more before
        the first forward, both at speech position 0; the second copy is the query whose logits
        give the first token.
        """
        text = self.text_embeds(text_ids, cfg_rows)
        rows = text.shape[0]
        dev = text.device
        bos = self.embed_speech(torch.full((1, 2), self.cfg.start_speech, device=dev), torch.zeros(2, dtype=torch.long, device=dev))
        return torch.cat([cond.expand(rows, -1, -1), text, bos.expand(rows, -1, -1)], dim=1)

    # ---- forward ----------------------------------------------------------------------------
    def new_cache(self, batch: int, max_len: int, *, device=None, dtype=None) -> KVCache:
        w = self.speech_head.weight
        return KVCache(self.cfg.llama, batch, max_len, device=device or w.device, dtype=dtype or w.dtype)

    def forward_hidden(self, embeds: torch.Tensor, start_pos: int, cache: KVCache,
                       probes: tuple[tuple[int, int], ...] = ()):
        """Run (B, T, C) embeddings at positions start_pos.. and return final-normed hidden states
        (and, with `probes`, row 0's attention weights of those (layer, head) pairs)."""
        T = embeds.shape[1]
        if start_pos + T > cache.max_len:
            raise ValueError(f"KV cache of {cache.max_len} positions cannot hold position {start_pos + T - 1}")
        input_pos = torch.arange(start_pos, start_pos + T, device=embeds.device)
        return self.tfmr(embeds, input_pos, cache, kv_len=start_pos + T, probes=probes)

    def speech_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.speech_head(hidden)
