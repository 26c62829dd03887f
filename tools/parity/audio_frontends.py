"""Parity fixture for S3Gen's audio front ends: run in the reference env.

    python tools/parity/audio_frontends.py --out tests/golden/audio_frontends.safetensors

Official functions, on deterministic test audio (tones + noise, |x| < 1):
- out.mel24           chatterbox `utils.mel.mel_spectrogram(in.wav24)`            (B, 80, L // 480)
- out.sinc_<a>_<b>    torchaudio `transforms.Resample(a, b)` (defaults), as S3Gen's
                      `get_resampler` builds it, on in.wav<a>
- out.soxr_<a>_<b>    `librosa.resample(in.wav<a>, orig_sr=a, target_sr=b)` (default soxr_hq), as
                      `mtl_tts.prepare_conditionals` calls it
- out.poly_<a>_<b>    `librosa.resample(in.wav<a>[0], orig_sr=a, target_sr=b, res_type="polyphase")`,
                      as Perth's watermark detector calls it (to 32 kHz)
- out.trim_fade       the `trim_fade` buffer of `S3Token2Wav()` (building it takes ~10 s)

`--size` is accepted for symmetry with the other generators; these functions have no sizes.
"""

from __future__ import annotations

import math

import sys
from pathlib import Path

import torch
from common import parser, save  # noqa: E402  (puts src/ on sys.path)

# This folder holds generators named like official packages (e.g. s3tokenizer.py); drop it from the
# import path so `chatterbox` imports the real ones.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

# (rate, samples): odd lengths so every output-length rule is exercised.
INPUTS = {24000: 12_345, 16000: 8_001, 44100: 4_411, 22050: 5_003}
SINC_PAIRS = [(24000, 16000), (16000, 24000), (44100, 16000), (22050, 24000), (44100, 24000)]
SOXR_PAIRS = [(24000, 16000), (44100, 24000), (16000, 24000)]
POLY_PAIRS = [(24000, 32000), (16000, 32000), (44100, 32000), (22050, 32000)]


def test_audio(sr: int, n: int, g: torch.Generator, rows: int = 2) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / sr
    freqs = 80.0 + 0.45 * sr * torch.rand(rows, 3, generator=g, dtype=torch.float64)  # up to 0.45·sr
    tones = sum(0.25 * torch.sin(2 * math.pi * freqs[:, k:k + 1] * t) for k in range(3))
    noise = 0.05 * torch.randn(rows, n, generator=g, dtype=torch.float64)
    return (tones + noise).float()


def main() -> None:
    args = parser(__doc__).parse_args()
    import librosa
    import torchaudio
    from chatterbox.models.s3gen.s3gen import S3Token2Wav
    from chatterbox.models.s3gen.utils.mel import mel_spectrogram

    torch.set_grad_enabled(False)
    g = torch.Generator().manual_seed(args.seed)
    wavs = {sr: test_audio(sr, n, g) for sr, n in INPUTS.items()}
    tensors = {f"in.wav{sr}": w for sr, w in wavs.items()}
    tensors["out.mel24"] = mel_spectrogram(wavs[24000])
    for a, b in SINC_PAIRS:
        tensors[f"out.sinc_{a}_{b}"] = torchaudio.transforms.Resample(a, b)(wavs[a])
    for a, b in SOXR_PAIRS:
        tensors[f"out.soxr_{a}_{b}"] = torch.from_numpy(librosa.resample(wavs[a].numpy(), orig_sr=a, target_sr=b))
    for a, b in POLY_PAIRS:
        tensors[f"out.poly_{a}_{b}"] = torch.from_numpy(
            librosa.resample(wavs[a][0].numpy(), orig_sr=a, target_sr=b, res_type="polyphase"))
    tensors["out.trim_fade"] = S3Token2Wav().trim_fade

    meta = dict(component="audio_frontends", seed=args.seed, sinc_pairs=SINC_PAIRS, soxr_pairs=SOXR_PAIRS,
                poly_pairs=POLY_PAIRS,
                librosa=librosa.__version__, torchaudio=torchaudio.__version__)
    save(args.out, tensors, meta)


if __name__ == "__main__":
    main()
