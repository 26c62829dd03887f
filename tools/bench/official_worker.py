"""The official package's side of `nutq bench --vs-reference` (runs in the reference env).

Loads `ChatterboxMultilingualTTS.from_local(model_dir)` once, then for every JSON line on stdin
(`{"seed": n}`) runs `generate()` on the checkpoint's built-in voice and prints one JSON line:
generate_s (the official time to first audio: it returns all audio at once), t3_s and t3_tokens
(its decode loop), s3gen_s. With --tokens N the loop is made to run exactly N steps: max_new_tokens
is N and the stop id is set to one it can never sample, so EOS neither stops it nor is forced
(the ids such a run produces beyond the codebook are dropped before S3Gen).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--language", default="ar")
    ap.add_argument("--tokens", type=int, default=0, help="force exactly this many decode steps (0: stop on EOS)")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()

    # The protocol owns stdout; the official package and Perth print progress there.
    out, sys.stdout = sys.stdout, sys.stderr

    import torch
    from chatterbox.mtl_tts import ChatterboxMultilingualTTS

    if args.threads:
        torch.set_num_threads(args.threads)
    model = ChatterboxMultilingualTTS.from_local(args.model_dir, "cpu")
    stats = {}
    t3_inference, s3_inference = model.t3.inference, model.s3gen.inference

    def timed_t3(*a, **kw):
        if args.tokens:
            kw["max_new_tokens"] = args.tokens
            model.t3.hp.stop_speech_token = -1  # never equal to a sampled id
        t = time.perf_counter()
        out = t3_inference(*a, **kw)
        stats["t3_s"] = time.perf_counter() - t
        stats["t3_tokens"] = int(out.shape[-1])
        if args.tokens:
            # Without a reachable stop id, a forced EOS samples an id S3Gen cannot embed (the
            # official code only trims at SOS/EOS): drop ids >= 6561 as nutq does.
            out = out[:, out[0] < 6561]
        stats["audio_tokens"] = int(out.shape[-1])
        return out

    def timed_s3(*a, **kw):
        t = time.perf_counter()
        out = s3_inference(*a, **kw)
        stats["s3gen_s"] = time.perf_counter() - t
        return out

    model.t3.inference, model.s3gen.inference = timed_t3, timed_s3
    eos = model.t3.hp.stop_speech_token
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        torch.manual_seed(int(req.get("seed", 0)))
        model.t3.hp.stop_speech_token = eos
        t = time.perf_counter()
        wav = model.generate(args.text, language_id=args.language)
        stats["generate_s"] = time.perf_counter() - t
        stats["audio_s"] = wav.shape[-1] / model.sr
        print(json.dumps(stats), file=out, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
