"""T3 decode tokens/s and the first streaming chunk's flow time, fp32 vs bf16, interleaved.

    python benchmarks/dtype_cpu.py OUT.json [--model-dir /tmp/full] [--rounds 4]

One thread; the first chunk's flow = 10 new tokens (finalize=False) after the 10 s voice prompt.
Round 0 warms up and is not counted; medians of the rest.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from nutq.engine.decode import decode_step, prefill
from nutq.tts import TTS

PROBES = ((12, 15), (13, 11), (9, 2))
TEXT = "مرحبا، أنا نطق، مساعدك الصوتي. كيف يمكنني مساعدتك اليوم؟"


def one_round(tts: TTS) -> tuple[float, float]:
    t3, v = tts.t3, tts.default_voice
    ids = tts.text_ids(TEXT)
    with torch.inference_mode():
        cond = t3.conditioning(v.speaker_emb, v.prompt_tokens, v.exaggeration)
    slot = tts.pool.lease()
    try:
        _, _, L = prefill(t3, cond, ids, slot.cache, PROBES)
        tok = torch.tensor([100])
        t = time.perf_counter()
        for i in range(10):
            decode_step(t3, tok, i + 1, L + i, slot.cache, PROBES)
        tok_s = 10 / (time.perf_counter() - t)
    finally:
        slot.release()
    t = time.perf_counter()
    tts.s3gen.flow_mel(torch.randint(0, 6561, (1, 10)), v.gen, finalize=False,
                       generator=torch.Generator().manual_seed(0))
    return tok_s, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--model-dir", default="/tmp/full")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(1)
    models = {"fp32": TTS.from_local(args.model_dir),
              "bf16": TTS.from_local(args.model_dir, dtype="bf16", flow_dtype="bf16")}
    rounds = {k: {"t3_tokens_per_s": [], "first_chunk_flow_s": []} for k in models}
    for r in range(args.rounds):
        for name, tts in models.items():
            tok_s, flow_s = one_round(tts)
            print(f"round {r} {name}: T3 {tok_s:.2f} tok/s, first-chunk flow {flow_s:.2f} s", flush=True)
            if r:
                rounds[name]["t3_tokens_per_s"].append(tok_s)
                rounds[name]["first_chunk_flow_s"].append(flow_s)
    out = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in rounds.items()}
    out["rounds"] = rounds
    print(json.dumps({k: out[k] for k in models}, indent=1))
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
