"""`nutq data prepare` throughput: utterances per second on a stand-in corpus.

    python benchmarks/prepare_throughput.py --model-dir DIR [--speakers 4] [--per-speaker 8]
        [--engine espeak|tones] [--workers 1] [--threads 1] [--repeats 3] [--device cpu]
        [--out benchmarks/results/prepare_cpu_full.json]

Generates the corpus once (espeak-ng when installed, else numpy tones; planted bad files off),
then runs the whole `prepare` (validation pass, S3 tokens, voice conditioning per clip, shards)
--repeats times into fresh directories and reports the median wall time, utterances/s and seconds
of audio prepared per second. Model loading is inside the timed region of every repeat (the CLI
pays it once per run too) and is also reported on its own.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--speakers", type=int, default=4)
    ap.add_argument("--per-speaker", type=int, default=8)
    ap.add_argument("--engine", choices=["espeak", "tones"], default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out")
    a = ap.parse_args()

    import torch

    from nutq.train.data.corpus import espeak_available, make_corpus
    from nutq.train.data.prepare import PrepareSettings, _Models, prepare

    engine = a.engine or ("espeak" if espeak_available() else "tones")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_corpus(Path(tmp) / "corpus", speakers=a.speakers, per_speaker=a.per_speaker, engine=engine,
                               planted=False)
        torch.set_num_threads(a.threads)
        t0 = time.perf_counter()
        _Models(a.model_dir, a.device)
        load_s = time.perf_counter() - t0
        walls, meta = [], None
        for r in range(a.repeats):
            t0 = time.perf_counter()
            meta = prepare(manifest, a.model_dir, Path(tmp) / f"out{r}", PrepareSettings(device=a.device),
                           workers=a.workers, threads=a.threads, progress=False)
            walls.append(time.perf_counter() - t0)
    n = sum(s["count"] for s in meta["splits"].values())
    audio_s = sum(s["seconds"] for s in meta["splits"].values())
    wall = statistics.median(walls)
    result = {"benchmark": "prepare_throughput", "model_dir": a.model_dir, "engine": engine, "utterances": n,
              "audio_seconds": round(audio_s, 2), "workers": a.workers, "threads": a.threads, "device": a.device,
              "wall_s": [round(w, 3) for w in walls], "median_wall_s": round(wall, 3),
              "utterances_per_s": round(n / wall, 3), "audio_seconds_per_s": round(audio_s / wall, 3),
              "model_load_s": round(load_s, 3), "machine": platform.machine(), "python": sys.version.split()[0],
              "torch": torch.__version__}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
