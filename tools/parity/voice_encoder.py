"""Golden front end + embeddings from the official VoiceEncoder (reference env).

    ~/.cache/nutq-refenv/venv/bin/python tools/parity/voice_encoder.py --out tests/golden/voice_encoder.safetensors
    ... --size full   (official 256-wide LSTM; used live by the slow refenv test)

The official class takes its sizes from a `VoiceEncConfig` instance, so the tiny model is the
official class built with a config whose `ve_hidden_size` is 64 and `speaker_embed_size` 256 (nutq's
`TINY`); nothing is patched. Weights: `randomize_module(ve, seed)` on both sides.

Saved (all through the official code path `embeds_from_wavs(..., sample_rate=16000)`, i.e.
librosa trim(top_db=20) -> melspectrogram -> partials at rate 1.3 -> LSTM -> mean -> L2):
- in.wav.<clip>: float32 16 kHz test clips (synthetic voiced speech-like signals);
- out.trim.<clip>: librosa.effects.trim bounds; out.mel.<clip>: official (T, 40) mel of the trimmed clip;
- out.embed.<clip>: (1, E) per clip; out.embed_notrim.voiced: trim disabled (trim_top_db=None);
- out.embeds_batch: (B, E) all clips in one call; out.speaker: its mean over clips, as
  prepare_conditionals takes it;
- in.trimwav.<k> / out.trimbounds.<k>: short signals whose quiet parts sit near -20 dB;
- out.num_wins: official get_num_wins(n, 77, 0.8) for n = 1..800 as rows (n, n_wins, target).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from common import parser, save

# This folder also holds scripts named like packages (s3tokenizer.py); keep them from
# shadowing the real packages the official code imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

SR = 16_000
TINY_WIDTH = 64  # nutq.models.voice_encoder.TINY hidden_size
TINY_EMBED = 256  # kept official: T3's speaker projection consumes it


def voiced(n: int, rng: np.random.Generator, f0: float = 140.0) -> np.ndarray:
    """Speech-like: 12 harmonics of a wobbling f0, syllable-rate envelope, a little noise."""
    t = np.arange(n) / SR
    f = f0 + 40 * np.sin(2 * np.pi * 0.7 * t) + 15 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f) / SR
    x = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k * (1.5 if 3 <= k <= 5 else 1.0) for k in range(1, 13))
    env = 0.35 + 0.65 * np.sin(np.pi * 4.0 * t + 0.3) ** 2
    x = x * env + 0.02 * rng.standard_normal(n)
    return 0.5 * x / np.abs(x).max()


def clips(rng: np.random.Generator) -> dict[str, np.ndarray]:
    def hush(n):  # near-silence (about -60 dB) so trim has something to cut
        return 5e-4 * rng.standard_normal(n)

    out = {
        # 0.45 s hush + 2.3 s voice + 0.4 s hush: trim matters, 3 partials + coverage decision
        "voiced": np.concatenate([hush(7200), voiced(36800, rng), hush(6400)]),
        # fully voiced, so untrimmed: 1 + 33500 // 160 = 210 frames -> leftover 50 >= 45: padded 2nd window
        "coverage_keep": voiced(33500, rng, f0=190.0),
        # 190 frames -> leftover 30 < 45: tail dropped, 1 window of the first 160 frames
        "coverage_drop": voiced(30290, rng, f0=110.0),
        # 0.7 s: shorter than one partial, zero-padded to one window
        "short": np.concatenate([hush(1600), voiced(11200, rng, f0=230.0), hush(800)]),
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


def trim_stress(rng: np.random.Generator) -> list[np.ndarray]:
    """Loud middle, quiet edges at amplitude ratios around the -20 dB threshold (0.1).

    With a pure sine the quiet frames' dB is -20·log10(1/ratio) up to rounding; the two ratios
    0.10000000021121297/8 were bisected so librosa decides differently on them (a float32
    rounding knife edge). Plus a noisy carrier, a clearly-quiet and an all-zero edge.
    """
    n = 8000
    sine = np.sin(2 * np.pi * 250 * np.arange(n) / SR)
    noisy = np.sin(2 * np.pi * 220 * np.arange(n) / SR) + 0.1 * rng.standard_normal(n)
    sigs = []
    for carrier, ratio in ((sine, 0.0995), (sine, 0.10000000021121297), (sine, 0.10000000021121298),
                           (sine, 0.1005), (noisy, 0.05), (noisy, 0.2), (noisy, 0.0)):
        env = np.full(n, ratio)
        env[2500:5600] = 1.0
        sigs.append((0.3 * carrier * env).astype(np.float32))
    return sigs


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    args = ap.parse_args()

    import librosa
    import torch
    from chatterbox.models.voice_encoder.config import VoiceEncConfig
    from chatterbox.models.voice_encoder.melspec import melspectrogram
    from chatterbox.models.voice_encoder.voice_encoder import VoiceEncoder, get_frame_step, get_num_wins

    from nutq.models.random_init import randomize_module

    class TinyConfig(VoiceEncConfig):
        ve_hidden_size = TINY_WIDTH
        speaker_embed_size = TINY_EMBED

    hp = VoiceEncConfig() if args.size == "full" else TinyConfig()
    torch.manual_seed(0)
    ve = VoiceEncoder(hp)
    randomize_module(ve, args.seed)
    ve.eval()

    rng = np.random.default_rng(args.seed)
    wavs = clips(rng)
    t: dict[str, torch.Tensor] = {}
    for name, w in wavs.items():
        trimmed, idx = librosa.effects.trim(w, top_db=20)
        t[f"in.wav.{name}"] = torch.from_numpy(w)
        t[f"out.trim.{name}"] = torch.tensor([int(i) for i in idx], dtype=torch.int64)
        t[f"out.mel.{name}"] = torch.from_numpy(np.ascontiguousarray(melspectrogram(trimmed, hp).T))
        t[f"out.embed.{name}"] = torch.from_numpy(ve.embeds_from_wavs([w], sample_rate=SR))
    t["out.embed_notrim.voiced"] = torch.from_numpy(ve.embeds_from_wavs([wavs["voiced"]], sample_rate=SR, trim_top_db=None))
    batch = torch.from_numpy(ve.embeds_from_wavs(list(wavs.values()), sample_rate=SR))
    t["out.embeds_batch"] = batch
    t["out.speaker"] = batch.mean(axis=0, keepdim=True)  # prepare_conditionals' reduction

    for k, s in enumerate(trim_stress(rng)):
        t[f"in.trimwav.{k}"] = torch.from_numpy(s)
        t[f"out.trimbounds.{k}"] = torch.tensor([int(i) for i in librosa.effects.trim(s, top_db=20)[1]], dtype=torch.int64)

    step = get_frame_step(0.5, 1.3, hp)
    t["out.num_wins"] = torch.tensor([(n, *get_num_wins(n, step, 0.8, hp)) for n in range(1, 801)], dtype=torch.int64)

    meta = {
        "size": args.size, "seed": args.seed, "clips": list(wavs), "frame_step": step,
        "hidden_size": hp.ve_hidden_size, "embed_size": hp.speaker_embed_size,
        "n_trim_stress": len(trim_stress(np.random.default_rng(0))), "librosa": librosa.__version__,
    }
    save(args.out, t, meta)


if __name__ == "__main__":
    main()
