"""Speculative T3 decoding on this machine: verify cost against a plain step, measured acceptance,
end-to-end tokens/s, and the speedup curve (tokens/s against acceptance rate) from measured costs.

    flock /tmp/nutq-heavy.lock python benchmarks/speculative.py --model-dir /tmp/full --dtype bf16 \
        [--device cpu|cuda] [--threads 2] [--reps 9] [--tokens 48] [--draft-layers 4] [--draft FILE] [--data PREPARED] \
        [--out benchmarks/results/speculative_cpu_full_bf16.json]

1. costs (median of --reps, batch 1 = both CFG rows, alignment-guard probes on as in serving):
   one plain decode step (`engine.decode.decode_step` + the row sampler's call with the guard, what
   the scheduler runs for one session), one verify forward over k + 1 positions for k = 1..8
   (`forward_hidden` + logits + `RowSampler.process`/`commit` at every position, what a round of
   `engine.spec_decode` runs), one step of a DraftT3 of --draft-layers layers, and one batched
   step (`BatchedStep` + one sampling call) for N = 1, 2, 4, 8 sessions;
2. measured runs of --tokens tokens (ignore_eos, sampling with the official defaults): the plain
   loop, speculative with draft = target (acceptance upper bound; each draft step is a full target
   step, so it is not faster), and speculative with the small draft (the untrained shortcut, or
   --draft FILE): acceptance, tokens per target forward, wall tokens/s;
3. the curve: for acceptance a in 0..1 the best k's tokens/s = E[tokens | a, k] / (k * draft_step +
   verify(k)), E = 1 + a + ... + a^k, against 1 / plain_step; and the bound for a draft that costs
   nothing (E / verify(k)), which says whether a target speedup is reachable here with any draft;
4. the crossover: N sessions decoded in rounds (one after another) make E/round tokens per second
   in all, batched plain steps N / batched(N): the largest N where rounds still win, per
   acceptance (what `--spec-max-batch` should be on this machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, reps: int, device: torch.device) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)  # the work queued on a GPU is part of the time
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default="/tmp/full")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N] (on a GPU: bf16, batch 1 and 8 as on CPU)")
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--draft-layers", type=int, default=4)
    ap.add_argument("--draft", default=None, help="a trained draft.safetensors (default: the untrained shortcut)")
    ap.add_argument("--data", default=None, help="a prepared dataset: condition the runs on its first validation "
                                                 "utterance (default: random voice, prompt and text ids)")
    ap.add_argument("--out", default="benchmarks/results/speculative_cpu_full_bf16.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)

    from nutq.checkpoints import files as ckfiles
    from nutq.engine.alignment import OFFICIAL
    from nutq.engine.batched_step import BatchedStep
    from nutq.engine.decode import decode_step, prefill
    from nutq.engine.kv_pool import KVPool
    from nutq.engine.row_sampler import RowSampler
    from nutq.engine.draft import DraftConfig, DraftT3, load_draft
    from nutq.engine.generate import iter_speech_tokens
    from nutq.engine.sampling import SamplingParams, cfg_mix, sampling_logits
    from nutq.engine.speculative import SpecConfig, SpecStats, expected_tokens, iter_speech_tokens_speculative
    from nutq.models.loading import DTYPES
    from nutq.models.registry import configs_from_sidecar, load_component

    files = ckfiles.resolve(a.model_dir, allow_download=False)
    t3 = load_component(files.root, "t3", configs_from_sidecar(files.sidecar)["t3"], device=dev,
                        dtype=DTYPES[a.dtype]).eval()
    draft = load_draft(a.draft, t3) if a.draft else DraftT3(t3, DraftConfig(a.draft_layers)).eval()
    g = torch.Generator().manual_seed(0)
    if a.data:  # a held-out utterance's text and voice prompts: what a draft trained on that corpus knows
        from nutq.train.data.prepared import PreparedDataset

        ex = PreparedDataset(a.data, "val")[0]
        voice, prompt = ex.ve_embedding.reshape(1, -1), ex.prompt_speech_tokens.reshape(1, -1)
        text = torch.cat([torch.tensor([t3.cfg.start_text]), ex.text_tokens, torch.tensor([t3.cfg.stop_text])]).to(dev)
    else:
        voice, prompt = torch.randn(1, 256, generator=g), torch.randint(0, 6561, (1, 150), generator=g)
        text = torch.randint(1, 2000, (40,), generator=g).to(dev)
    with torch.inference_mode():
        cond = t3.conditioning(voice.to(dev), prompt.to(dev), 0.5)
    params = SamplingParams(max_new_tokens=a.tokens, ignore_eos=True)
    probes = OFFICIAL.heads
    V = t3.cfg.speech_vocab
    seen = torch.zeros(1, V, dtype=torch.bool, device=dev)

    def gen(seed: int) -> torch.Generator:
        return torch.Generator(dev).manual_seed(seed)

    cache = t3.new_cache(batch=2, max_len=512)
    logits0, attn0, L = prefill(t3, cond, text, cache, probes)
    span = (t3.cfg.len_cond, t3.cfg.len_cond + text.shape[-1])
    rows = RowSampler(t3, 1, max_text=512)
    rows.start(0, params, gen(1), OFFICIAL, span, attn0)
    tok = torch.tensor([5], device=dev)

    def plain_step():
        logits, attn = decode_step(t3, tok, 1, L, cache, probes)
        rows.sample([0], logits[None], attn[None])

    def verify(k):
        def run():
            with torch.inference_mode():
                ids = torch.randint(0, 6561, (1, k + 1), device=dev)
                e = t3.embed_speech(ids, torch.arange(1, k + 2, device=dev)).expand(2, -1, -1)
                h, attn = t3.forward_hidden(e, L, cache, probes=probes)
                lg = t3.speech_logits(h).float()
            for i in range(k + 1):
                proc = rows.process(0, lg[:, i], attn[:, i:i + 1])
                rows.commit(0, proc.argmax(-1))
        return run

    # N sessions in one batched step, as the scheduler runs a large batch
    bpool = KVPool(t3.cfg.llama, 8, 512, device=dev, dtype=t3.speech_head.weight.dtype)
    bstep = BatchedStep(t3, bpool, probes)
    brows = RowSampler(t3, 8, max_text=512)
    for slot in range(8):
        c = bpool.cache.rows(2 * slot, 2)
        _, attn_s, _ = prefill(t3, cond, text, c, probes)
        brows.start(slot, params, gen(slot), OFFICIAL, span, attn_s)

    def batched(n):
        def run():
            logits, attn = bstep(list(range(n)), torch.full((n,), 5, device=dev), [1] * n, [L] * n)
            brows.sample(list(range(n)), logits, attn)
        return run

    dcache = draft.new_cache(2, 512)
    with torch.inference_mode():
        draft.forward_hidden(t3.prefill_embeds(cond, text), 0, dcache)

    def draft_step():
        with torch.inference_mode():
            e = t3.embed_speech(tok.reshape(1, 1), torch.tensor([1], device=dev)).expand(2, -1, -1)
            lg = draft.speech_logits(draft.forward_hidden(e, L, dcache)[:, -1]).float()
            sampling_logits(cfg_mix(lg[0:1], lg[1:2], 0.5), seen, params).softmax(-1)

    # interleave the measurements (a shared, noisy machine): each round measures everything once
    NS = (1, 2, 4, 8)
    rounds = {"plain": [], "draft": [], **{f"verify_{k}": [] for k in range(1, 9)},
              **{f"batched_{n}": [] for n in NS}}
    for _ in range(3):
        rounds["plain"].append(median_time(plain_step, a.reps, dev))
        rounds["draft"].append(median_time(draft_step, a.reps, dev))
        for k in range(1, 9):
            rounds[f"verify_{k}"].append(median_time(verify(k), a.reps, dev))
        for n in NS:
            rounds[f"batched_{n}"].append(median_time(batched(n), a.reps, dev))
    cost = {name: statistics.median(v) for name, v in rounds.items()}
    plain_s = cost["plain"]
    verify_ratio = {k: cost[f"verify_{k}"] / plain_s for k in range(1, 9)}

    def timed(tokens):
        sync(dev)
        t0 = time.perf_counter()
        n = sum(1 for _ in tokens)
        sync(dev)
        return n, time.perf_counter() - t0

    n, plain_wall = timed(iter_speech_tokens(t3, cond, text, SamplingParams(max_new_tokens=a.tokens), guard=OFFICIAL,
                                             generator=gen(2)))
    runs = {"plain": {"tokens": n, "seconds": plain_wall, "tokens_per_s": n / plain_wall}}
    for name, d, k in (("draft_target", "target", 4), ("small_draft", draft, 4)):
        st = SpecStats()
        n, wall = timed(iter_speech_tokens_speculative(t3, cond, text, params, SpecConfig(k=k, draft=d, adaptive=False),
                                                       guard=OFFICIAL, generator=gen(2), accept_generator=gen(3),
                                                       spec_stats=st))
        runs[name] = {"tokens": n, "seconds": wall, "tokens_per_s": n / wall, "k": k, **st.as_dict()}

    def best(alpha: float, draft_s: float = cost["draft"]) -> tuple[int, float]:
        rate = {k: expected_tokens(alpha, k) / (k * draft_s + cost[f"verify_{k}"]) for k in range(1, 9)}
        k = max(rate, key=rate.get)
        return k, rate[k]

    curve = []
    for i in range(11):
        alpha = i / 10
        k, r = best(alpha)
        curve.append({"acceptance": alpha, "best_k": k, "tokens_per_s": r, "speedup": r * plain_s})
    # The most any draft could give at these verify costs: a draft that costs nothing. At acceptance
    # alpha a round yields at most 1 / (1 - alpha) tokens, so this says whether a target speedup is
    # reachable on this machine at all, whatever the draft.
    free_draft = []
    for i in range(11):
        k, r = best(i / 10, draft_s=0.0)
        free_draft.append({"acceptance": i / 10, "best_k": k, "speedup": r * plain_s})
    measured = {name: best(min(runs[name]["acceptance_rate"], 1.0)) for name in ("draft_target", "small_draft")}
    # rounds for N sessions: E/R tokens/s in all (best k); batched plain steps: N / batched(N)
    crossover = []
    for alpha in (0.5, 0.6, 0.7, 0.8, 0.9):
        k, rate = best(alpha)
        max_batch = 0  # the largest N such that rounds win at every batch size up to it
        for n in NS:
            if rate <= n / cost[f"batched_{n}"]:
                break
            max_batch = n
        crossover.append({"acceptance": alpha, "best_k": k, "rounds_tokens_per_s": rate,
                          "batched_tokens_per_s": {n: n / cost[f"batched_{n}"] for n in NS},
                          "max_batch": max_batch})
    result = {
        "machine": {"platform": platform.platform(), "threads": a.threads, "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                    "note": "medians of interleaved rounds"},
        "model": str(files.root), "dtype": a.dtype, "draft_layers": draft.llama.num_layers,
        "draft": a.draft or "untrained shortcut (target's first layers)", "data": a.data,
        "costs_s": cost, "verify_over_plain": verify_ratio, "draft_over_plain": cost["draft"] / plain_s,
        "runs": runs, "curve": curve, "free_draft_bound": free_draft, "crossover": crossover,
        "modelled_at_measured_acceptance": {n: {"best_k": k, "tokens_per_s": r, "speedup": r * plain_s}
                                            for n, (k, r) in measured.items()},
        "targets": {"verify_k4_le_1.5x_plain": verify_ratio[4] <= 1.5,
                    "speedup_ge_2x_at_0.6": next(c for c in curve if c["acceptance"] == 0.6)["speedup"] >= 2.0,
                    "reachable_2x_at_0.6_with_a_free_draft":
                        next(c for c in free_draft if c["acceptance"] == 0.6)["speedup"] >= 2.0},
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("verify_over_plain", "draft_over_plain", "targets")}, indent=2))
    print(json.dumps(curve, indent=1))
    print(json.dumps(free_draft, indent=1))
    print(json.dumps(runs, indent=1))
    print(json.dumps(crossover, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
