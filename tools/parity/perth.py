"""Golden outputs of Perth's own watermarker and detector (resemble-perth 1.0.1, reference env).

    ~/.cache/nutq-refenv/venv/bin/python tools/parity/perth.py --out tests/golden/perth.safetensors

Perth's `PerthImplicitWatermarker` with its shipped weights (no random weights: the trained
network is the thing to match). `--size`/`--seed` are accepted for the common CLI; the seed drives
the test signals. Saved, per clip (speech-like tones with noise; 24 kHz, the engine's rate, whose
length is not a whole number of hops; 32 kHz, Perth's own rate, where nothing is resampled; 16 kHz):
- in.wav.<clip>: the float32 input;
- out.marked.<clip>: `apply_watermark(wav, sample_rate)` (shorter than the input by Perth's round trip);
- out.score_marked.<clip> / out.score_plain.<clip>: `get_watermark(..., round=False)` of the
  marked output and of the input.
"""

from __future__ import annotations

import contextlib
import io
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

from common import parser, save

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

CLIPS = {"speech24k": (24_000, 72_000 - 7), "speech32k": (32_000, 48_000), "speech16k": (16_000, 40_000)}


def voiced(sr: int, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / sr
    f0 = 130 + 25 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 9)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    return (0.25 * x / np.abs(x).max() + 0.01 * rng.standard_normal(n)).astype(np.float32)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # perth imports pkg_resources, which warns
        from perth.perth_net.perth_net_implicit.perth_watermarker import PerthImplicitWatermarker
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line when its checkpoint loads
        perth = PerthImplicitWatermarker(device="cpu")
    rng = np.random.default_rng(args.seed)
    tensors = {}
    for name, (sr, n) in CLIPS.items():
        wav = voiced(sr, n, rng)
        with torch.inference_mode():
            marked = np.asarray(perth.apply_watermark(wav, sample_rate=sr), dtype=np.float32)
            tensors[f"out.score_marked.{name}"] = torch.tensor(float(perth.get_watermark(marked, sr, round=False)))
            tensors[f"out.score_plain.{name}"] = torch.tensor(float(perth.get_watermark(wav, sr, round=False)))
        tensors[f"in.wav.{name}"] = torch.from_numpy(wav)
        tensors[f"out.marked.{name}"] = torch.from_numpy(marked)
    save(args.out, tensors, {"seed": args.seed, "clips": {k: {"sr": sr, "n": n} for k, (sr, n) in CLIPS.items()},
                             "perth": "resemble-perth " + metadata.version("resemble-perth")})


if __name__ == "__main__":
    main()
