"""Voices: the conditionals both models need, from a reference clip or the official `conds.pt`."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..audio.resample import resample
from ..errors import ClientError
from ..models.s3gen.model import S3GEN_SR, S3_SR, RefDict
from ..rates import SAMPLES_PER_TOKEN

__all__ = ["Voice", "VoiceError", "load_audio", "load_conds", "save_conds"]

MIN_REF_SECONDS = 1.0  # shorter clips give too few prompt tokens for a stable voice
MAX_REF_BYTES = 50 * 1024 * 1024
T3_PROMPT_SECONDS = 6  # T3 prompt: 150 tokens
S3GEN_PROMPT_SECONDS = 10  # S3Gen prompt: 250 tokens / 500 mel frames


class VoiceError(ClientError):
    """A reference clip that cannot make a voice (unreadable, too short, silent, too large)."""


@dataclass(frozen=True)
class Voice:
    speaker_emb: torch.Tensor  # (1, 256) voice-encoder embedding
    prompt_tokens: torch.Tensor  # (1, 150) T3 speech prompt
    exaggeration: float
    gen: RefDict

    def with_exaggeration(self, value: float) -> "Voice":
        return replace(self, exaggeration=float(value))


def load_audio(src, sr: int | None = None) -> tuple[np.ndarray, int]:
    """(mono float32 samples, sample rate) from a path, bytes, or an array (then `sr` is needed)."""
    import soundfile as sf

    if isinstance(src, (np.ndarray, torch.Tensor)):
        if sr is None:
            raise VoiceError("an audio array needs its sample rate")
        wav = np.asarray(src.detach().cpu() if isinstance(src, torch.Tensor) else src, dtype=np.float32)
    else:
        if isinstance(src, (bytes, bytearray)):
            if len(src) > MAX_REF_BYTES:
                raise VoiceError(f"reference audio is {len(src)} bytes; the limit is {MAX_REF_BYTES}")
            src = io.BytesIO(src)
        elif isinstance(src, (str, Path)):
            p = Path(src)
            if not p.is_file():
                raise VoiceError(f"reference audio not found: {p}")
            if p.stat().st_size > MAX_REF_BYTES:
                raise VoiceError(f"reference audio {p} is larger than {MAX_REF_BYTES} bytes")
        try:
            wav, sr = sf.read(src, dtype="float32", always_2d=True)
        except Exception as e:  # noqa: BLE001 - libsndfile raises several types for bad input
            raise VoiceError(f"cannot decode reference audio: {e}") from e
        wav = wav.T  # (channels, samples)
    if wav.ndim == 2:
        wav = wav.mean(axis=0)  # mono mix
    if wav.ndim != 1 or wav.size == 0:
        raise VoiceError("reference audio is empty")
    if not np.isfinite(wav).all():
        raise VoiceError("reference audio contains NaN or infinite samples")
    return wav.astype(np.float32), int(sr)


def prepare_voice(tts_models, src, sr: int | None = None, exaggeration: float = 0.5) -> Voice:
    """The official `prepare_conditionals`, from any readable clip."""
    ve, s3gen, t3_prompt_len = tts_models
    wav, sr = load_audio(src, sr)
    if len(wav) < MIN_REF_SECONDS * sr:
        raise VoiceError(f"reference audio is {len(wav) / sr:.2f} s; at least {MIN_REF_SECONDS} s is needed")
    if np.abs(wav).max() < 1e-4:
        raise VoiceError("reference audio is silent")
    ref24 = resample(wav, sr, S3GEN_SR) if sr != S3GEN_SR else wav
    ref16 = resample(ref24, S3GEN_SR, S3_SR)
    # Deviation from the official: the S3Gen prompt is cut to whole 40 ms tokens (960 samples).
    # Otherwise an odd number of prompt mel frames makes every output one frame short of
    # 2 x tokens, breaking the 960-samples-per-token contract streaming relies on.
    n24 = min(len(ref24), S3GEN_PROMPT_SECONDS * S3GEN_SR) // SAMPLES_PER_TOKEN * SAMPLES_PER_TOKEN
    gen = s3gen.embed_ref(torch.from_numpy(np.ascontiguousarray(ref24[:n24])))
    tokens, _ = s3gen.tokenizer.tokenize(torch.from_numpy(ref16[: T3_PROMPT_SECONDS * S3_SR]).reshape(1, -1),
                                         max_len=t3_prompt_len)
    spk = ve.speaker_embedding([ref16])
    return Voice(spk.reshape(1, -1).float(), torch.atleast_2d(tokens), float(exaggeration), gen)


def load_conds(path: str | Path) -> Voice:
    """The official built-in voice file (`{"t3": T3Cond fields, "gen": ref dict}`)."""
    d = torch.load(path, map_location="cpu", weights_only=True)
    try:
        t3, gen = d["t3"], d["gen"]
        return Voice(t3["speaker_emb"].float(), t3["cond_prompt_speech_tokens"],
                     float(torch.as_tensor(t3["emotion_adv"]).reshape(-1)[0]),
                     RefDict(gen["prompt_token"], torch.as_tensor(gen["prompt_token_len"]).reshape(1),
                             gen["prompt_feat"].float(), gen["embedding"].float()))
    except (KeyError, TypeError, AttributeError) as e:
        raise VoiceError(f"{path} is not a Chatterbox conds.pt file ({e})") from e


def save_conds(voice: Voice, path: str | Path) -> None:
    """Write a voice in the official conds.pt format (loadable by the official package too)."""
    torch.save({
        "t3": {"speaker_emb": voice.speaker_emb, "clap_emb": None, "cond_prompt_speech_tokens": voice.prompt_tokens,
               "cond_prompt_speech_emb": None, "emotion_adv": torch.full((1, 1, 1), voice.exaggeration)},
        "gen": {"prompt_token": voice.gen.prompt_token, "prompt_token_len": voice.gen.prompt_token_len,
                "prompt_feat": voice.gen.prompt_feat, "prompt_feat_len": None, "embedding": voice.gen.embedding},
    }, path)
