"""`nutq bench --speculative DRAFT`: T3 alone, the plain loop against speculative decoding.

DRAFT is a draft file (`nutq train draft`), `target` (draft with the target itself: the acceptance
upper bound, not faster) or `shortcut:N` (the target's first N layers, untrained). Interleaved
trials on the same text, voice and seeds; reports T3 tokens/s of both, the acceptance rate, the mean
accepted length and tokens per target forward (medians over trials).
"""

from __future__ import annotations

import json
import statistics
import time

from ..errors import NutqError

__all__ = ["run_speculative"]


def run_speculative(args, model_dir) -> int:
    import torch

    from ..engine.draft import resolve_draft
    from ..engine.generate import iter_speech_tokens
    from ..engine.sampling import SamplingParams
    from ..engine.session import resolve_guard
    from ..engine.speculative import SpecConfig, SpecStats, iter_speech_tokens_speculative
    from ..tts import TTS

    tts = TTS.from_local(model_dir, device=args.device, dtype=args.dtype)
    t3 = tts.t3
    draft = resolve_draft(args.speculative, t3)
    spec = SpecConfig(k=args.spec_k, draft=draft, k_max=max(8, args.spec_k))
    guard = None if args.guard == "none" else resolve_guard(args.guard)
    voice = tts.voice(None, None)
    with torch.inference_mode():
        cond = t3.conditioning(voice.speaker_emb, voice.prompt_tokens, voice.exaggeration)
    ids = tts.text_ids(args.text, args.lang)
    n = args.tokens or 1000
    plain_params = SamplingParams(max_new_tokens=n)
    spec_params = SamplingParams(max_new_tokens=n, ignore_eos=bool(args.tokens))

    def timed(gen) -> tuple[int, float]:
        t0 = time.perf_counter()
        count = sum(1 for _ in gen)
        return count, time.perf_counter() - t0

    plain, fast, stats = [], [], []
    for i in range(args.warmup + args.trials):
        seed = args.seed + i
        # The plain reference loop always stops on EOS; its tokens/s is a per-token rate either way.
        plain_run = timed(iter_speech_tokens(t3, cond, ids, plain_params, guard=guard,
                                             generator=torch.Generator().manual_seed(seed)))
        st = SpecStats()
        spec_run = timed(iter_speech_tokens_speculative(
            t3, cond, ids, spec_params, spec, guard=guard, generator=torch.Generator().manual_seed(seed),
            accept_generator=torch.Generator().manual_seed(10_000 + seed), spec_stats=st))
        if i >= args.warmup:
            plain.append(plain_run[0] / plain_run[1])
            fast.append(spec_run[0] / spec_run[1])
            stats.append(st)
        print(f"trial {i}: speculative {spec_run[0] / spec_run[1]:.1f} tok/s, acceptance {st.acceptance_rate:.2f}, "
              f"{st.tokens_per_forward:.2f} tokens/forward | plain {plain_run[0] / plain_run[1]:.1f} tok/s", flush=True)
    med = statistics.median
    result = {"draft": args.speculative, "k": args.spec_k, "guard": args.guard, "tokens": args.tokens,
              "plain_tokens_per_s": med(plain), "speculative_tokens_per_s": med(fast),
              "acceptance_rate": med([s.acceptance_rate for s in stats]),
              "mean_accepted_length": med([s.mean_accepted_length for s in stats]),
              "tokens_per_forward": med([s.tokens_per_forward for s in stats]),
              "threads": torch.get_num_threads(), "model_dir": str(model_dir)}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0
