"""`nutq.TTS`: offline synthesis (text -> 24 kHz float32 audio) on the plain reference path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoints import files as ckfiles
from .engine.generate import generate_speech_tokens
from .engine.sampling import SamplingParams
from .engine.voice import Voice, VoiceError, load_conds, prepare_voice
from .models.loading import DTYPES
from .models.registry import configs_from_sidecar, load_component

__all__ = ["TTS", "SAMPLE_RATE"]

SAMPLE_RATE = 24_000
_ENDINGS = tuple(".!?-,؟،؛。？！")


class TTS:
    """Loads the four official files once; `synthesize` is thread-compatible but not re-entrant."""

    def __init__(self, files: ckfiles.CheckpointFiles, device: str = "cpu", dtype: str | None = None):
        from .text.tokenizer import MTLTokenizer

        self.files = files
        self.device = torch.device(device)
        cfgs = configs_from_sidecar(files.sidecar)
        t3_dtype = DTYPES[dtype] if dtype else None
        self.t3 = load_component(files.root, "t3", cfgs["t3"], dtype=t3_dtype, device=self.device)
        self.ve = load_component(files.root, "ve", cfgs["ve"], device=self.device)
        self.s3gen = load_component(files.root, "s3gen", cfgs["s3gen"], device=self.device)
        self.tokenizer = MTLTokenizer.from_file(files.tokenizer)
        self.default_voice: Voice | None = load_conds(files.conds) if files.conds else None

    @classmethod
    def from_local(cls, model_dir: str | Path, **kw) -> "TTS":
        return cls(ckfiles.resolve(model_dir), **kw)

    @classmethod
    def from_pretrained(cls, revision: str | None = None, **kw) -> "TTS":
        return cls(ckfiles.resolve(None, revision=revision), **kw)

    def prepare_voice(self, src, sr: int | None = None, exaggeration: float = 0.5) -> Voice:
        return prepare_voice((self.ve, self.s3gen, self.t3.cfg.prompt_len), src, sr, exaggeration)

    def text_ids(self, text: str, language: str = "ar", normalize: bool = True) -> torch.Tensor:
        """[SOT] + tokenizer ids + [EOT] for one utterance."""
        text = " ".join(text.split())
        if normalize and language == "ar":
            from .text.frontend import normalize_text

            text = normalize_text(text, "ar").text
        if not text.strip():
            raise ValueError("nothing to say: the text is empty after normalization")
        if not text.endswith(_ENDINGS):
            text += "."  # the official pipeline ends every utterance with punctuation
        ids = self.tokenizer.encode(text, language)
        cfg = self.t3.cfg
        return torch.tensor([cfg.start_text, *ids, cfg.stop_text], dtype=torch.long)

    def synthesize(self, text: str, language: str = "ar", voice: Voice | str | Path | bytes | None = None, *,
                   seed: int | None = None, exaggeration: float = 0.5, cfg_weight: float = 0.5,
                   temperature: float = 0.8, repetition_penalty: float = 2.0, min_p: float = 0.05,
                   top_p: float = 1.0, max_new_tokens: int = 1000, normalize: bool = True) -> np.ndarray:
        """Text -> (N,) float32 audio at 24 kHz, with the official defaults."""
        if voice is None:
            if self.default_voice is None:
                raise VoiceError("this checkpoint has no conds.pt: pass voice=<reference clip>")
            voice = self.default_voice
        elif not isinstance(voice, Voice):
            voice = self.prepare_voice(voice, exaggeration=exaggeration)
        voice = voice.with_exaggeration(exaggeration)
        params = SamplingParams(cfg_weight=cfg_weight, temperature=temperature, repetition_penalty=repetition_penalty,
                                min_p=min_p, top_p=top_p, max_new_tokens=max_new_tokens)
        gen = torch.Generator(device="cpu")
        gen.manual_seed(seed if seed is not None else int(torch.seed() % 2**31))
        ids = self.text_ids(text, language, normalize)
        with torch.inference_mode():
            cond = self.t3.conditioning(voice.speaker_emb, voice.prompt_tokens, voice.exaggeration)
            res = generate_speech_tokens(self.t3, cond, ids, params, generator=gen if self.device.type == "cpu" else None)
            if not res.tokens:
                return np.zeros(0, dtype=np.float32)
            tokens = torch.tensor(res.tokens, device=self.device).reshape(1, -1)
            noise_gen = gen if self.device.type == "cpu" else None
            wav, _ = self.s3gen.inference(tokens, voice.gen.to(self.device), generator=noise_gen)
        return wav[0].float().cpu().numpy()
