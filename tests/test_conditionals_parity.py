"""`prepare_voice` equals the official `prepare_conditionals` (chatterbox-tts 0.1.7, random weights, fp32).

Fixture: tests/golden/conditionals.safetensors from tools/parity/conditionals.py: the official method,
unchanged, on two WAV clips (a: 12 s at 22.05 kHz mono; b: 5.55 s at 16 kHz stereo), with the voice
encoder, S3 tokenizer and CAMPPlus filled by `randomize_module(seed)` on both sides.

Resampling: both pipelines resample at load (to 24 kHz) and for the 16 kHz copy (voice encoder, T3
prompt) with soxr HQ: the official through `librosa.load`/`librosa.resample` (default
`res_type="soxr_hq"`), nutq through `nutq.audio.resample.resample`; the generator measures them on the
same files and records 0.0 max difference, so the model inputs are identical and every output is
compared with tolerances that only absorb float summation order (observed tiny: VE embedding 3e-8,
prompt log-mel 4.8e-7 on values around -10, x-vector 0.0, all tokens identical). Inside S3Gen both
use the windowed-sinc resampler (torchaudio's, re-implemented), as the official does.

Deliberate deviation: nutq cuts the S3Gen prompt audio to whole 960-sample tokens. Clip a's 10 s
prompt is already whole (250 tokens), so everything equals the official output; clip b's is not, so
its S3Gen part is compared with the official `embed_ref` on the cut clip (`out.b_cut.*`). Against the
uncut official prompt the cut drops the odd last mel frame (277 -> 276) and changes the two frames
before it (their STFT windows reach past the cut), changes 6 of 138 prompt tokens (13 at full size;
the tokenizer's attention sees the whole clip) and moves the x-vector by 2e-4 (full size 2.8e-4).
"""

from __future__ import annotations


import pytest
import soundfile as sf
import torch

from conftest import load_golden, run_generator
from nutq.engine.voice import prepare_voice
from nutq.models.random_init import randomize_module
from nutq.models.s3gen.model import S3GEN_FULL, S3GEN_TINY, S3Gen
from nutq.models.voice_encoder import FULL as VE_FULL
from nutq.models.voice_encoder import TINY as VE_TINY
from nutq.models.voice_encoder import VoiceEncoder

EMB_TOL = 1e-5  # VE embedding (unit norm) and log-mel prompt features: same fp32 ops in the same order
XVEC_TOL = 1e-4  # CAMPPlus x-vector: the bound the CAMPPlus parity test uses
DSP_BUFFERS = ("_mel_filters", "window")


def build_models(size: str, seed: int):
    s3gen = S3Gen(S3GEN_FULL if size == "full" else S3GEN_TINY).eval()
    randomize_module(s3gen.tokenizer, seed, keep_suffixes=DSP_BUFFERS)
    randomize_module(s3gen.speaker_encoder, seed)
    ve = randomize_module(VoiceEncoder(VE_FULL if size == "full" else VE_TINY), seed).eval()
    return ve, s3gen, 150


def write_clip(g: dict, meta: dict, name: str, tmp_path) -> str:
    path = tmp_path / f"{name}.wav"
    sf.write(path, g[f"in.{name}"].numpy().T, meta["clips"][name]["sr"], subtype="PCM_16")
    return str(path)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, f"shape {tuple(a.shape)} != official {tuple(b.shape)}"
    return float((a.detach().float() - b.float()).abs().max())


def check_t3_part(voice, g: dict, clip: str) -> None:
    assert torch.equal(voice.prompt_tokens, g[f"out.{clip}.t3_tokens"]), f"clip {clip}: T3 prompt tokens differ"
    assert max_diff(voice.speaker_emb, g[f"out.{clip}.speaker_emb"]) <= EMB_TOL
    assert voice.exaggeration == pytest.approx(float(g[f"out.{clip}.emotion"]))


def check_s3gen_part(gen, g: dict, prefix: str) -> None:
    assert torch.equal(gen.prompt_token, g[f"{prefix}.prompt_token"]), f"{prefix}: S3Gen prompt tokens differ"
    assert int(gen.prompt_token_len) == int(g[f"{prefix}.prompt_token_len"])
    assert max_diff(gen.prompt_feat, g[f"{prefix}.prompt_feat"]) <= EMB_TOL
    assert max_diff(gen.embedding, g[f"{prefix}.embedding"]) <= XVEC_TOL


def check(models, g: dict, meta: dict, tmp_path) -> None:
    exaggeration = meta["exaggeration"]
    for clip in ("a", "b"):
        assert meta["resample"][clip] == {"load_to_24k": 0.0, "24k_to_16k": 0.0}, \
            "nutq's soxr resampling no longer equals librosa's: re-measure and document the difference"
    a = prepare_voice(models, write_clip(g, meta, "a", tmp_path), exaggeration=exaggeration)
    check_t3_part(a, g, "a")
    check_s3gen_part(a.gen, g, "out.a")  # 10 s = 250 whole tokens: no deviation

    b = prepare_voice(models, write_clip(g, meta, "b", tmp_path), exaggeration=exaggeration)
    check_t3_part(b, g, "b")  # the 16 kHz path is not cut
    check_s3gen_part(b.gen, g, "out.b_cut")
    # What the whole-token cut changes against the uncut official prompt: one trailing mel frame
    # fewer (2 per token exactly), the same token count (the official drops its extra token too).
    assert b.gen.prompt_feat.shape[1] == 2 * b.gen.prompt_token.shape[1] == g["out.b.prompt_feat"].shape[1] - 1


def test_prepare_voice_matches_official_prepare_conditionals(tmp_path):
    g, meta = load_golden("conditionals")
    check(build_models("tiny", meta["seed"]), g, meta, tmp_path)


def test_the_fixture_discriminates():
    """The references must depend on the clip by far more than the tolerances, or equality proves little."""
    g, _ = load_golden("conditionals")
    assert max_diff(g["out.a.speaker_emb"], g["out.b.speaker_emb"]) > 100 * EMB_TOL
    assert max_diff(g["out.a.prompt_feat"][:, :276], g["out.b_cut.prompt_feat"]) > 1.0
    assert (g["out.a.t3_tokens"][:, :139] != g["out.b.t3_tokens"]).float().mean() > 0.3  # 42 % differ
    assert max_diff(g["out.a.embedding"], g["out.b.embedding"]) > 10 * XVEC_TOL


@pytest.mark.slow
@pytest.mark.refenv
def test_prepare_voice_matches_official_full_size_live(tmp_path):
    out = tmp_path / "conditionals_full.safetensors"
    g, meta = run_generator("conditionals.py", out, "--size", "full")
    check(build_models("full", meta["seed"]), g, meta, tmp_path)
