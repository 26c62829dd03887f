"""`synthesize` on PyTorch vs the onnxruntime backend, CPU, same seed and tokens, interleaved.

    python benchmarks/onnx_backend.py OUT.json --model-dir DIR --onnx-dir ONNX_DIR [--rounds 5] [--tokens 50]

Both TTS objects load the same checkpoint (fp32); each round times one `synthesize` on each,
alternating which goes first. Round 0 warms up and is not counted; medians of the rest. The
tokens are the same on both (same seed, outputs equal to float rounding), so the times compare
the same work: T3 prefill + decode steps, the flow (10 Euler steps with CFG) and HiFT.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

from nutq.checkpoints.files import resolve
from nutq.tts import TTS

TEXT = "مرحبا، أنا نطق، مساعدك الصوتي. كيف يمكنني مساعدتك اليوم؟"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--onnx-dir", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    files = resolve(a.model_dir)
    engines = {"torch": TTS(files), "onnxruntime": TTS(files, backend="onnxruntime", onnx_dir=a.onnx_dir)}
    times: dict[str, list[float]] = {k: [] for k in engines}
    wavs = {}
    for r in range(a.rounds + 1):
        order = list(engines) if r % 2 == 0 else list(engines)[::-1]
        for name in order:
            t = time.perf_counter()
            wavs[name] = engines[name].synthesize(TEXT, seed=0, max_new_tokens=a.tokens, watermark=False)
            if r:
                times[name].append(time.perf_counter() - t)
    audio_s = len(wavs["torch"]) / 24000
    res = {"bench": "onnx_backend", "model_dir": str(a.model_dir), "tokens": a.tokens, "threads": a.threads,
           "rounds": a.rounds, "audio_s": audio_s, "max_abs_diff": float(np.abs(wavs["torch"] - wavs["onnxruntime"]).max()),
           "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    for name, ts in times.items():
        res[name] = {"median_s": statistics.median(ts), "rtf": statistics.median(ts) / audio_s, "all_s": ts}
    res["speedup_ort_vs_torch"] = res["torch"]["median_s"] / res["onnxruntime"]["median_s"]
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: v for k, v in res.items() if k not in ("torch", "onnxruntime")}),
          {k: round(res[k]["median_s"], 3) for k in engines})


if __name__ == "__main__":
    main()
