"""How fast a voice becomes usable: nutq voice file vs the official conds.pt vs preparing from a clip.

    python benchmarks/voice_load.py [--out benchmarks/results/voice_load.json] [--rounds 7]
        [--full-dir /tmp/full] [--sizes tiny full]

For each model size (tiny: made in a temporary directory; full: an official-layout checkpoint at
--full-dir, e.g. from `nutq make-checkpoint /tmp/full --size full`), one 10 s reference clip
(44.1 kHz WAV bytes, a common upload) is prepared into a voice, written both ways, and then, in
interleaved rounds, timed:
  prepare     TTS.prepare_voice on the clip bytes (decode, resample, VE, S3 tokenizer, CAMPPlus, mel)
  conds_pt    nutq.engine.voice.load_conds (torch.load of the official pickle format)
  nutq_voice  nutq.engine.voice_format.load_voice (safetensors, fully validated)
  cache_hit   VoiceCache.get of a voice held in memory
Loads are timed as the mean of an inner loop per round (they take well under a millisecond); the
JSON reports the median over rounds. Only VE and S3Gen are loaded: T3 plays no part in a voice.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from nutq.checkpoints import files as ckfiles
from nutq.checkpoints.make import make_checkpoint
from nutq.engine.voice import load_conds, prepare_voice, save_conds
from nutq.engine.voice_cache import VoiceCache
from nutq.engine.voice_format import load_voice, model_fingerprint, save_voice
from nutq.models.registry import configs_from_sidecar, load_component

CLIP_SR = 44_100
CLIP_SECONDS = 10.0
INNER = 50  # repetitions per round for the sub-millisecond loads


def speechlike_clip(seconds: float, sr: int, seed: int = 0) -> bytes:
    """A voiced, vibrato-modulated harmonic tone with syllable-rate amplitude and a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 130 + 25 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))
    x = 0.2 * x / np.abs(x).max() + 0.005 * np.random.default_rng(seed).standard_normal(t.size)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def load_models(root: Path):
    f = ckfiles.resolve(root)
    cfgs = configs_from_sidecar(f.sidecar)
    ve = load_component(f.root, "ve", cfgs["ve"])
    s3gen = load_component(f.root, "s3gen", cfgs["s3gen"])
    return ve, s3gen, cfgs["t3"].prompt_len


def timed(fn, n: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e3  # ms


def bench_size(size: str, root: Path, rounds: int, work: Path) -> dict:
    models = load_models(root)
    clip = speechlike_clip(CLIP_SECONDS, CLIP_SR)

    def prepare(b: bytes):
        with torch.inference_mode():
            return prepare_voice(models, b)

    voice = prepare(clip)  # also warms up the kernels before timing
    nutq_file, conds_file = work / f"{size}.safetensors", work / f"{size}_conds.pt"
    save_voice(voice, nutq_file, meta=None)
    save_conds(voice, conds_file)
    cache = VoiceCache(prepare, model=model_fingerprint(root))
    vid = cache.add(clip)

    cases = {
        "prepare": (lambda: prepare(clip), 1),
        "conds_pt": (lambda: load_conds(conds_file), INNER),
        "nutq_voice": (lambda: load_voice(nutq_file), INNER),
        "cache_hit": (lambda: cache.get(vid), INNER),
    }
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for r in range(rounds):
        order = list(cases) if r % 2 == 0 else list(reversed(cases))  # interleave, alternate order
        for k in order:
            fn, n = cases[k]
            samples[k].append(timed(fn, n))
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "checkpoint": str(root),
        "median_ms": {k: round(v, 4) for k, v in med.items()},
        "all_ms": {k: [round(x, 4) for x in v] for k, v in samples.items()},
        "speedup_vs_conds_pt": round(med["conds_pt"] / med["nutq_voice"], 2),
        "speedup_vs_prepare": round(med["prepare"] / med["nutq_voice"], 1),
        "file_bytes": {"nutq_voice": nutq_file.stat().st_size, "conds_pt": conds_file.stat().st_size},
        "prompt_tokens": list(voice.prompt_tokens.shape), "prompt_feat": list(voice.gen.prompt_feat.shape),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="benchmarks/results/voice_load.json")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--full-dir", default="/tmp/full")
    ap.add_argument("--sizes", nargs="+", default=["tiny", "full"], choices=["tiny", "full"])
    args = ap.parse_args()

    result = {
        "benchmark": "voice_load", "date": time.strftime("%Y-%m-%d"), "rounds": args.rounds,
        "clip": {"seconds": CLIP_SECONDS, "sample_rate": CLIP_SR, "format": "WAV PCM_16"},
        "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
        "machine": platform.machine(), "load_average_start": os.getloadavg(), "sizes": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for size in args.sizes:
            if size == "tiny":
                root = make_checkpoint(work / "tiny", size="tiny", seed=0).root
            else:
                root = Path(args.full_dir)
                if not (root / ckfiles.CONDS_FILE).exists():
                    raise SystemExit(f"no full-size checkpoint at {root}: nutq make-checkpoint {root} --size full")
            r = result["sizes"][size] = bench_size(size, root, args.rounds, work)
            m = r["median_ms"]
            print(f"{size}: prepare {m['prepare']:.1f} ms | conds.pt {m['conds_pt']:.3f} ms | "
                  f"nutq voice {m['nutq_voice']:.3f} ms | cache hit {m['cache_hit']:.4f} ms")
    result["load_average_end"] = os.getloadavg()  # a shared machine: say how busy it was
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
