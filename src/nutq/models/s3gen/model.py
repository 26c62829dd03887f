"""S3Gen as one module whose state dict is the official `s3gen.pt`:
`tokenizer.*` (S3 speech tokenizer), `speaker_encoder.*` (CAMPPlus), `flow.*` (token -> mel),
`mel2wav.*` (HiFT vocoder). With a meanflow estimator config (`S3GEN_FULL_MEANFLOW`) it is the
distilled decoder, whose state dict is `s3gen_meanflow.safetensors`: the same tensors plus
`flow.decoder.estimator.time_embed_mixer.weight`.

Randomness is explicit everywhere (flow noise, HiFT source phase/noise) so offline, streaming and
batched callers can reproduce each other exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from ...audio.fade import apply_trim_fade
from ...audio.mel24k import MelSpectrogram24k
from ...audio.resample import resample_sinc
from .campplus import CAMPPLUS_FULL, CAMPPLUS_TINY, CAMPPlus, CAMPPlusConfig
from .cfm import EulerCFG, MeanFlowEuler, Solver
from .flow import FLOW_FULL, FLOW_TINY, Flow, FlowConfig
from .hift import FULL as HIFT_FULL
from .hift import TINY as HIFT_TINY
from .hift import HiFTConfig, HiFTGenerator
from .s3tokenizer import S3_TOKENIZER_FULL, S3_TOKENIZER_TINY, S3Tokenizer, S3TokenizerConfig

__all__ = ["S3GenConfig", "S3GEN_FULL", "S3GEN_TINY", "S3GEN_FULL_MEANFLOW", "with_meanflow", "S3Gen", "RefDict", "S3GEN_SR", "S3_SR"]

S3GEN_SR = 24_000
S3_SR = 16_000


@dataclass(frozen=True)
class S3GenConfig:
    tokenizer: S3TokenizerConfig = S3_TOKENIZER_FULL
    speaker_encoder: CAMPPlusConfig = CAMPPLUS_FULL
    flow: FlowConfig = FLOW_FULL
    hift: HiFTConfig = HIFT_FULL


S3GEN_FULL = S3GenConfig()
# Tiny widths everywhere, but the flow keeps the full 6561-token vocabulary so that tokens sampled
# by a tiny T3 are valid input end to end.
S3GEN_TINY = S3GenConfig(S3_TOKENIZER_TINY, CAMPPLUS_TINY, replace(FLOW_TINY, vocab_size=6561), HIFT_TINY)


def with_meanflow(cfg: S3GenConfig) -> S3GenConfig:
    """The distilled decoder's config for an S3Gen of these sizes (only the estimator changes)."""
    return replace(cfg, flow=replace(cfg.flow, estimator=replace(cfg.flow.estimator, meanflow=True)))


S3GEN_FULL_MEANFLOW = with_meanflow(S3GEN_FULL)


@dataclass
class RefDict:
    """S3Gen's voice conditionals (the official `conds.pt` "gen" entry)."""

    prompt_token: torch.Tensor  # (1, Tp) int64
    prompt_token_len: torch.Tensor  # (1,) int64
    prompt_feat: torch.Tensor  # (1, 2*Tp, 80) log-mel at 24 kHz
    embedding: torch.Tensor  # (1, 192) CAMPPlus x-vector
    prompt_feat_len: torch.Tensor | None = field(default=None)

    def to(self, device=None, dtype=None) -> "RefDict":
        f = lambda t: None if t is None else t.to(device=device, dtype=dtype if t.is_floating_point() else None)  # noqa: E731
        return RefDict(f(self.prompt_token), f(self.prompt_token_len), f(self.prompt_feat), f(self.embedding),
                       f(self.prompt_feat_len))


class S3Gen(nn.Module):
    def __init__(self, cfg: S3GenConfig = S3GEN_FULL):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = S3Tokenizer(cfg.tokenizer)
        self.speaker_encoder = CAMPPlus(cfg.speaker_encoder)
        self.flow = Flow(cfg.flow)
        self.mel2wav = HiFTGenerator(cfg.hift)
        self.mel24k = MelSpectrogram24k()

    @property
    def dtype(self) -> torch.dtype:
        return self.flow.encoder_proj.weight.dtype

    @torch.inference_mode()
    def embed_ref(self, wav24k: torch.Tensor) -> RefDict:
        """Conditionals from a 24 kHz mono reference (the caller cuts it to 10 s), as the official
        `embed_ref`: 24 kHz mel for the prompt, torchaudio-equivalent sinc resampling to 16 kHz
        for the x-vector and the prompt tokens, tokens cut so that mel frames = 2 x tokens."""
        dev = self.flow.encoder_proj.weight.device
        wav = torch.as_tensor(wav24k, dtype=torch.float32).reshape(1, -1).to(dev)
        mel = self.mel24k(wav).transpose(1, 2).to(self.dtype)  # (1, T, 80)
        wav16 = resample_sinc(wav, S3GEN_SR, S3_SR)
        xvec = self.speaker_encoder.embed(wav16.to(self.speaker_encoder_dtype))
        tokens, lens = self.tokenizer.tokenize(wav16.float())
        if mel.shape[1] != 2 * tokens.shape[1]:
            tokens = tokens[:, : mel.shape[1] // 2]
            lens = torch.tensor([tokens.shape[1]], device=tokens.device)
        return RefDict(tokens, lens.reshape(1).long(), mel, xvec)

    @property
    def speaker_encoder_dtype(self) -> torch.dtype:
        return next(self.speaker_encoder.parameters()).dtype

    @property
    def meanflow(self) -> bool:
        """True for the distilled decoder (`s3gen_meanflow.safetensors`)."""
        return self.cfg.flow.estimator.meanflow

    def default_solver(self) -> Solver:
        """The official solver for this decoder: 10-step CFG Euler, or 2-step meanflow Euler."""
        return MeanFlowEuler() if self.meanflow else EulerCFG()

    @torch.inference_mode()
    def flow_mel(self, tokens: torch.Tensor, ref: RefDict, *, finalize: bool = True, noise=None,
                 generator: torch.Generator | None = None, solver: Solver | None = None) -> torch.Tensor:
        """(1, Tn) tokens -> (1, 80, 2*Tn) mel (6 frames fewer when not finalize)."""
        return self.flow.inference(tokens.reshape(1, -1), None, ref.prompt_token, ref.prompt_token_len,
                                   ref.prompt_feat, ref.embedding, finalize=finalize, noise=noise,
                                   generator=generator, solver=solver or self.default_solver())

    @torch.inference_mode()
    def inference(self, tokens: torch.Tensor, ref: RefDict, *, noise=None, generator: torch.Generator | None = None,
                  solver: Solver | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Offline synthesis as the official `S3Gen.inference`: (1, N*960) waveform (trim-faded) and
        the HiFT source. `solver` defaults to this decoder's official one (`default_solver`)."""
        mel = self.flow_mel(tokens, ref, finalize=True, noise=noise, generator=generator, solver=solver)
        wav, source = self.mel2wav.inference(mel.to(self.dtype), generator=generator)
        return apply_trim_fade(wav), source
