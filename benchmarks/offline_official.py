"""Official-side worker for benchmarks/offline.py; runs in the reference env (chatterbox-tts 0.1.7).

    ~/.cache/nutq-refenv/venv/bin/python benchmarks/offline_official.py CKPT [THREADS]   (driven by offline.py)

Loads `ChatterboxMultilingualTTS.from_local(CKPT, "cpu")` once, then for each JSON request line
`{"text", "tokens"}` runs `generate(text, "ar")` with `torch.multinomial` replaced by a replay of the
given tokens followed by EOS (every other part of the official T3 loop runs as is) and answers one
JSON line with the T3, S3Gen, watermark and total times in seconds.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    reply = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    sys.stdout = sys.stderr  # the official code prints (Perth's load message); keep the channel clean
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS

    if len(sys.argv) > 2:
        torch.set_num_threads(int(sys.argv[2]))
    tts = ChatterboxMultilingualTTS.from_local(sys.argv[1], "cpu")
    eos = tts.t3.hp.stop_speech_token
    times: dict[str, float] = {}
    replay: list[int] = []

    def replay_multinomial(probs, num_samples=1, **_):
        return torch.tensor([[replay.pop(0)]], device=probs.device)

    def timed(name, fn):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            out = fn(*a, **kw)
            times[name] = time.perf_counter() - t
            return out
        return wrapper

    tts.t3.inference = timed("t3", tts.t3.inference)
    tts.s3gen.inference = timed("s3gen", tts.s3gen.inference)
    tts.watermarker.apply_watermark = timed("watermark", tts.watermarker.apply_watermark)
    torch.multinomial = replay_multinomial
    reply.write(json.dumps({"ready": True, "threads": torch.get_num_threads(), "torch": torch.__version__}) + "\n")
    for line in sys.stdin:
        req = json.loads(line)
        replay[:] = [*req["tokens"], eos]
        torch.manual_seed(0)
        t = time.perf_counter()
        wav = tts.generate(req["text"], language_id="ar")
        times["total"] = time.perf_counter() - t
        times["total_without_watermark"] = times["total"] - times["watermark"]
        reply.write(json.dumps(dict(times, samples=int(wav.shape[-1]))) + "\n")


if __name__ == "__main__":
    main()
