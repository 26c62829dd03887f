"""S3Gen flow (`CausalMaskedDiffWithXvec`): speech tokens + a voice prompt -> 80-bin mel at 50 Hz.

The new tokens are appended to the voice's prompt tokens and the whole sequence is encoded (the
encoder and the estimator attend in both directions, so the prompt conditions every frame). The
mel of the prompt is given as `cond` for the first 2·Tp frames, the CFM solver denoises all frames,
and the prompt part is cut off the result.

The noise is an argument: streaming re-runs the flow on a growing token prefix and needs the same
noise for frames it has already produced. Keys equal the official `flow.*` keys without `flow.`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nutq.models.s3gen.cfm import CFMDecoder, EulerCFG, Solver
from nutq.models.s3gen.estimator import ESTIMATOR_FULL, ESTIMATOR_TINY, EstimatorConfig
from nutq.models.s3gen.flow_encoder import (
    FLOW_ENCODER_FULL,
    FLOW_ENCODER_TINY,
    FlowEncoderConfig,
    UpsampleConformerEncoder,
    key_padding_mask,
)

__all__ = ["FlowConfig", "FLOW_FULL", "FLOW_TINY", "Flow"]


@dataclass(frozen=True)
class FlowConfig:
    vocab_size: int = 6561  # S3 speech-token codebook
    spk_embed_dim: int = 192  # CAMPPlus x-vector
    encoder: FlowEncoderConfig = FLOW_ENCODER_FULL
    estimator: EstimatorConfig = ESTIMATOR_FULL

    @property
    def n_mels(self) -> int:
        return self.estimator.n_mels

    @property
    def token_mel_ratio(self) -> int:
        """Mel frames per speech token (25 Hz tokens, 50 Hz mel)."""
        return self.encoder.up_stride

    @property
    def lookahead_frames(self) -> int:
        """Mel frames held back when `finalize=False`: the look-ahead tokens' frames (3·2 = 6)."""
        return self.encoder.pre_lookahead_len * self.encoder.up_stride


FLOW_FULL = FlowConfig()
FLOW_TINY = FlowConfig(vocab_size=256, encoder=FLOW_ENCODER_TINY, estimator=ESTIMATOR_TINY)


def _batch(x: Tensor, b: int) -> Tensor:
    """Broadcast a per-voice tensor with batch 1 to batch b (a view, no copy)."""
    return x.expand(b, *x.shape[1:]) if x.size(0) == 1 and b > 1 else x


class Flow(nn.Module):
    def __init__(self, cfg: FlowConfig = FLOW_FULL):
        super().__init__()
        self.cfg = cfg
        # Registration order = official state-dict order.
        self.input_embedding = nn.Embedding(cfg.vocab_size, cfg.encoder.input_size)
        self.spk_embed_affine_layer = nn.Linear(cfg.spk_embed_dim, cfg.n_mels)
        self.encoder = UpsampleConformerEncoder(cfg.encoder)
        self.encoder_proj = nn.Linear(cfg.encoder.d_model, cfg.n_mels)
        self.decoder = CFMDecoder(cfg.estimator)

    def encode(
        self, tokens: Tensor, token_len: Tensor, finalize: bool = True, *, n_frames: int | None = None,
        isolate_rows: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """All tokens (prompt ++ new) (B, T) -> mu (B, 80, 2T[-6]) and frame mask (B, 1, 2T[-6]).

        `n_frames` keeps exactly the first n_frames frames instead (`finalize` is then ignored);
        `isolate_rows`: see `UpsampleConformerEncoder.forward`."""
        valid = key_padding_mask(token_len, tokens.size(1))  # (B, T)
        dtype = self.spk_embed_affine_layer.weight.dtype
        # Padded ids may be anything (-1, EOS ids); they are zeroed after the lookup anyway.
        x = self.input_embedding(tokens.long().masked_fill(~valid, 0)) * valid.unsqueeze(-1).to(dtype)
        h, h_mask = self.encoder(x, token_len, isolate_rows=isolate_rows)  # (B, 2T, C), (B, 1, 2T)
        if n_frames is None and not finalize:
            # The last look-ahead tokens have not seen their right context yet: hold their frames back.
            n_frames = h.size(1) - self.cfg.lookahead_frames
        if n_frames is not None:  # cut before the projection: solo calls keep the official shapes
            h, h_mask = h[:, :n_frames], h_mask[:, :, :n_frames]
        return self.encoder_proj(h).transpose(1, 2), h_mask  # (B, 80, T_mel), (B, 1, T_mel)

    def _spks(self, embedding: Tensor, b: int) -> Tensor:
        """x-vector(s) (1|B, 192) -> the estimator's speaker input (B, 80)."""
        dtype = self.spk_embed_affine_layer.weight.dtype  # voice tensors follow the model's dtype
        embedding = torch.atleast_2d(embedding).to(device=self.encoder_proj.weight.device, dtype=dtype)
        return _batch(self.spk_embed_affine_layer(F.normalize(embedding, dim=1)), b)

    @torch.inference_mode()
    def inference(
        self,
        token: Tensor,
        token_len: Tensor | None,
        prompt_token: Tensor,
        prompt_token_len: Tensor | None,
        prompt_feat: Tensor,
        embedding: Tensor,
        *,
        finalize: bool,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
        solver: Solver | None = None,
    ) -> Tensor:
        """Mel for the new tokens: (B, 80, 2·Tn), or 2·Tn - 6 frames when `finalize=False`.

        token: (B, Tn) new speech tokens; prompt_token: (1|B, Tp); prompt_feat: (1|B, 2·Tp, 80)
        (time-major, as stored in the voice conditionals); embedding: (1|B, 192) x-vector.
        Lengths (B,) may be None for unpadded input.

        noise: (1|B, 80, >= T_mel) with T_mel = 2·(Tp+Tn) (minus 6 if not finalize); it covers the
        prompt frames too and only its first T_mel frames are used, so one noise tensor drawn for
        the longest prefix serves every streaming call. None draws N(0,1) with `generator`.
        `solver`: how the estimator is integrated; the official `EulerCFG()` (10 steps, CFG 0.7) by
        default, `MeanFlowEuler()` for a meanflow estimator.
        With `finalize=False` the 6 frames are cut from the padded end, so rows should be unpadded;
        with no more than 3 new tokens nothing is ready yet and an empty (B, 80, 0) mel is returned.
        """
        b = token.size(0)
        dev = token.device
        if not finalize and token.size(1) <= self.cfg.encoder.pre_lookahead_len:
            return torch.zeros(b, self.cfg.n_mels, 0, device=dev, dtype=self.encoder_proj.weight.dtype)
        if token_len is None:
            token_len = torch.full((b,), token.size(1), dtype=torch.long, device=dev)
        if prompt_token_len is None:
            prompt_token_len = torch.full((1,), prompt_token.size(1), dtype=torch.long, device=dev)

        dtype = self.spk_embed_affine_layer.weight.dtype
        spks = self._spks(embedding, b)  # (B, 80)
        prompt_feat = _batch(prompt_feat.to(device=dev, dtype=dtype), b)
        tokens = torch.cat([_batch(prompt_token.to(dev), b), token], dim=1)  # (B, Tp+Tn)
        lens = _batch(prompt_token_len.reshape(-1).to(dev), b) + token_len.to(dev)

        mu, mask = self.encode(tokens, lens, finalize)
        mask = mask.to(mu.dtype)
        n_prompt, t_mel = prompt_feat.size(1), mu.size(2)
        cond = torch.zeros_like(mu)  # (B, 80, T_mel): the prompt's mel, zeros where we generate
        cond[:, :, :n_prompt] = prompt_feat.transpose(1, 2)

        if noise is None:
            z = torch.randn(mu.shape, generator=generator, device=dev, dtype=mu.dtype)
        else:
            if noise.size(-1) < t_mel:
                raise ValueError(f"noise has {noise.size(-1)} frames, this call needs {t_mel}")
            z = _batch(noise[..., :t_mel].to(device=dev, dtype=mu.dtype), b)

        feat = self.decoder(z, mu, mask, spks, cond, solver or EulerCFG())
        return feat[:, :, n_prompt:]

    @torch.inference_mode()
    def inference_packed(
        self,
        tokens: Tensor,
        token_len: Tensor,
        mel_len: Tensor,
        cond: Tensor,
        embedding: Tensor,
        noise: Tensor,
        *,
        solver: Solver | None = None,
    ) -> Tensor:
        """Rows that each bring their own voice prompt and length, in one call (batched streaming).

        tokens: (B, T) row i = its prompt tokens ++ its new tokens, right-padded (pad ids are
        ignored); token_len: (B,) valid tokens per row; mel_len: (B,) frames each row solves,
        prompt frames included (2·token_len, or lookahead_frames fewer for a row that is not
        finalized); cond: (B, 80, T_mel) each row's prompt mel in its first frames, zeros after;
        embedding: (B, 192); noise: (B, 80, T_mel). T_mel = max(mel_len) <= 2T.

        Returns (B, 80, T_mel) with each row's prompt frames still in front; frames past a row's
        mel_len are unspecified. Padding is isolated (encoder look-ahead zeroed, frame masks in the
        estimator), so every row's valid frames equal `inference` on that row alone up to float
        rounding (other matmul shapes, the key-padding bias in attention).
        """
        t_mel = noise.size(-1)
        mu, _ = self.encode(tokens, token_len, n_frames=t_mel, isolate_rows=True)  # (B, 80, T_mel)
        frames = torch.arange(t_mel, device=mu.device)
        mask = (frames < mel_len.to(mu.device).unsqueeze(1)).unsqueeze(1).to(mu.dtype)  # (B, 1, T_mel)
        spks = self._spks(embedding, tokens.size(0))  # (B, 80)
        return self.decoder(noise.to(mu.dtype), mu, mask, spks, cond.to(mu.dtype), solver or EulerCFG())
