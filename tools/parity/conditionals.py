"""Parity fixture for voice conditionals: the official `prepare_conditionals` (reference env only).

    ~/.cache/nutq-refenv/venv/bin/python tools/parity/conditionals.py --out tests/golden/conditionals.safetensors
    ... --size full --out /tmp/conditionals_full.safetensors   (official sizes, for the slow live test)

Runs `ChatterboxMultilingualTTS.prepare_conditionals` (official 0.1.7 code, unchanged) on two
reference clips written to WAV files, and records what it produces. The pipeline object holds
official parts built by the sibling generators (tiny or full, weights `randomize_module(seed)`
per part, so nutq fills its parts the same way):
  ve                voice encoder (`voice_encoder.py`'s tiny config, or the official one)
  s3gen.tokenizer   S3 tokenizer (`s3tokenizer.build_official`)
  s3gen.speaker_encoder  CAMPPlus (`campplus.build_official`)
`prepare_conditionals` touches nothing else: T3 only for `hp.speech_cond_prompt_len` (150), S3Gen's
flow only for its dtype. So the S3Gen object is an official `S3Token2Mel` whose `__init__` is
skipped (it would build the full-size flow) and whose official `embed_ref` runs on those parts.

Clips (stored as int16 in the fixture; the test writes the same WAV bytes):
  a: 12 s mono at 22.05 kHz: resampled at load to 24 kHz (librosa soxr_hq) and cut to the
     10 s S3Gen prompt, 240,000 samples = 250 whole tokens, so nutq's whole-token cut changes nothing;
  b: 5.55 s stereo at 16 kHz (mono-mixed; upsampled to 24 kHz): 133,200 samples is not a whole number
     of 960-sample tokens, so the official prompt keeps an odd mel frame (277) while nutq cuts it to
     132,480 samples. `out.b_cut.*` holds the official `embed_ref` on that cut clip, which is what
     nutq is meant to equal.
Saved per clip c: out.c.speaker_emb (1, 256), out.c.t3_tokens (1, ≤150), out.c.prompt_token,
out.c.prompt_token_len, out.c.prompt_feat (1, T, 80), out.c.embedding (1, 192); `meta.resample`
records max |nutq.audio.resample.resample − librosa| on each load/16 kHz resampling step.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import common  # noqa: F401  (first: sys.path without tools/parity, nutq's src/ in front, HF offline)
import numpy as np
import torch

EXAGGERATION = 0.7
CLIPS = {"a": dict(sr=22_050, seconds=12.0, channels=1), "b": dict(sr=16_000, seconds=5.55, channels=2)}
S3GEN_SR, S3_SR, TOKEN_SAMPLES = 24_000, 16_000, 960


def sibling(name: str):
    """Another generator of this folder, loaded by path (several are named like real packages)."""
    spec = importlib.util.spec_from_file_location(f"_parity_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clip_pcm(name: str, seed: int) -> np.ndarray:
    """(channels, N) int16 speech-like audio (campplus.py's synthetic voice, one per channel)."""
    c = CLIPS[name]
    n = round(c["seconds"] * c["sr"])
    voice = sibling("campplus").synthetic_voice
    chans = [voice(n, seed + 100 * k, sr=c["sr"]).numpy() * (1.0 if k == 0 else 0.6) for k in range(c["channels"])]
    return np.round(np.stack(chans) * 32767).astype(np.int16)


def build_official_ve(size: str, seed: int):
    from chatterbox.models.voice_encoder.config import VoiceEncConfig
    from chatterbox.models.voice_encoder.voice_encoder import VoiceEncoder

    from nutq.models.random_init import randomize_module
    from nutq.models.voice_encoder import TINY

    class TinyConfig(VoiceEncConfig):
        ve_hidden_size = TINY.hidden_size
        speaker_embed_size = TINY.embed_size

    return randomize_module(VoiceEncoder(VoiceEncConfig() if size == "full" else TinyConfig()), seed).eval()


def build_official_pipeline(size: str, seed: int):
    from chatterbox.models.s3gen.s3gen import S3Token2Mel
    from chatterbox.models.s3gen.utils.mel import mel_spectrogram
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS

    s3gen = S3Token2Mel.__new__(S3Token2Mel)
    torch.nn.Module.__init__(s3gen)
    s3gen.tokenizer = sibling("s3tokenizer").build_official(size, seed)[0]
    s3gen.speaker_encoder = sibling("campplus").build_official(size, seed)[0]
    s3gen.mel_extractor = mel_spectrogram
    s3gen.flow = torch.nn.Linear(1, 1)  # read only for S3Gen's dtype (fp32)
    s3gen.eval()
    t3 = SimpleNamespace(hp=T3Config.multilingual())
    return ChatterboxMultilingualTTS(t3, s3gen, build_official_ve(size, seed), tokenizer=None, device="cpu")


def conds_tensors(prefix: str, t3cond, gen: dict) -> dict:
    out = {f"{prefix}.{k}": gen[k] for k in ("prompt_token", "prompt_token_len", "prompt_feat", "embedding")}
    if t3cond is not None:
        out[f"{prefix}.speaker_emb"] = t3cond.speaker_emb
        out[f"{prefix}.t3_tokens"] = t3cond.cond_prompt_speech_tokens
        out[f"{prefix}.emotion"] = t3cond.emotion_adv
    return out


def resample_gaps(path: Path) -> dict:
    """How far nutq's soxr resampling is from librosa's on this file's two resampling steps."""
    import librosa
    import soundfile as sf

    from nutq.audio.resample import resample

    raw, sr = sf.read(path, dtype="float32", always_2d=True)
    ours24 = resample(raw.T.mean(axis=0), sr, S3GEN_SR)
    ref24, _ = librosa.load(path, sr=S3GEN_SR)
    ours16 = resample(ref24, S3GEN_SR, S3_SR)
    ref16 = librosa.resample(ref24, orig_sr=S3GEN_SR, target_sr=S3_SR)
    return {"load_to_24k": float(np.abs(ours24 - ref24).max()), "24k_to_16k": float(np.abs(ours16 - ref16).max())}


def main() -> None:
    import librosa
    import soundfile as sf

    args = common.parser(__doc__.splitlines()[0]).parse_args()
    torch.set_grad_enabled(False)
    tts = build_official_pipeline(args.size, args.seed)
    tensors, gaps = {}, {}
    tmp = args.out.parent / f".{args.out.stem}_clips"
    tmp.mkdir(parents=True, exist_ok=True)
    for name, c in CLIPS.items():
        pcm = clip_pcm(name, args.seed)
        path = tmp / f"{name}.wav"
        sf.write(path, pcm.T, c["sr"], subtype="PCM_16")
        tensors[f"in.{name}"] = torch.from_numpy(pcm)
        tts.prepare_conditionals(str(path), exaggeration=EXAGGERATION)
        tensors.update(conds_tensors(f"out.{name}", tts.conds.t3, tts.conds.gen))
        gaps[name] = resample_gaps(path)
        if name == "b":  # what nutq deliberately computes: the official embed_ref on whole tokens
            ref24, _ = librosa.load(path, sr=S3GEN_SR)
            ref24 = ref24[: tts.DEC_COND_LEN]
            gen = tts.s3gen.embed_ref(ref24[: len(ref24) // TOKEN_SAMPLES * TOKEN_SAMPLES], S3GEN_SR)
            tensors.update(conds_tensors("out.b_cut", None, gen))
        path.unlink()
    tmp.rmdir()
    common.save(args.out, tensors, {"size": args.size, "seed": args.seed, "exaggeration": EXAGGERATION,
                                    "clips": CLIPS, "resample": gaps, "librosa": librosa.__version__})


if __name__ == "__main__":
    main()
