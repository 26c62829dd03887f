"""Host time of sampling + alignment guard per decode step, for N sessions: per session vs one call.

    python benchmarks/sampling_step.py [OUT.json] [--sessions 1 8 32 64] [--steps 30] [--rounds 5]

"per-session" is the engine's previous path: each session its own batch-1 `DeviceGuard` (over its
text span) and the scalar sampling chain with its own generator. "batched" is `RowSampler`: one
guard update and one sampling call for all rows. Both get the same logits (N, 2, 8194) and probe
attention; sessions have the official defaults (min_p 0.05, penalty 2.0, temperature 0.8) and
the official guard.

On CPU the time includes the arithmetic, which grows with N in both paths (the rows are 8194
wide); on a GPU that runs on the device while the host goes on, so the host's share is what the
op counts measure: `*_ops`, the ATen ops one step dispatches (counted with a dispatch mode), a
machine-independent measure of host work. The two paths alternate within each round; medians
over rounds (round 0 warms up, not counted).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nutq.engine.alignment import OFFICIAL
from nutq.engine.alignment_device import DeviceGuard
from nutq.engine.row_sampler import RowSampler
from nutq.engine.sampling import SamplingParams, cfg_mix, sample, sampling_logits
from nutq.models.t3 import T3, T3_TINY

TEXT, KV = 60, 400  # text tokens per session, probe attention width


class PerSession:
    """The previous per-session path (one guard and one sampler per session)."""

    def __init__(self, n: int, dev: torch.device, prefill: torch.Tensor, span: tuple[int, int]):
        i, j = span
        cfg = T3_TINY
        self.p, self.span, self.eos = SamplingParams(), span, cfg.stop_speech
        self.guards, self.state, self.seen, self.fed = [], [], [], []
        for _ in range(n):
            g = DeviceGuard(1, j - i, OFFICIAL, device=dev)
            self.guards.append(g)
            self.state.append(g.start([prefill[:, -2:, i:j]], bos=cfg.start_speech))
            seen = torch.zeros(1, cfg.speech_vocab, dtype=torch.bool, device=dev)
            self.seen.append(seen)
            self.fed.append(torch.zeros(1, dtype=torch.long, device=dev))

    def step(self, logits: torch.Tensor, attn: torch.Tensor) -> list[torch.Tensor]:
        i, j = self.span
        out = []
        for k, g in enumerate(self.guards):
            _, sup, force = self.state[k] = g.observe(attn[k][None, :, 0, i:j], self.fed[k])
            mixed = g.apply(cfg_mix(logits[k, 0:1], logits[k, 1:2], self.p.cfg_weight), sup, force, self.eos)
            tok = sample(sampling_logits(mixed, self.seen[k], self.p), self.p, None)
            self.seen[k].scatter_(1, tok.reshape(1, 1), True)
            self.fed[k] = tok
            out.append(tok)
        return out


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn) -> int:
    """ATen ops one call dispatches: each is a kernel launch (or more) a GPU step pays host time for."""
    with _Count() as c:
        fn()
    return c.n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default="benchmarks/results/sampling_step_cpu.json")
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    dev = torch.device("cpu")
    with torch.device(dev):
        t3 = T3(T3_TINY).eval()
    lc = T3_TINY.len_cond
    span = (lc, lc + TEXT)
    L = span[1] + 2
    heads = len(OFFICIAL.heads)
    prefill = torch.rand(heads, L, L, device=dev).softmax(-1)
    results = []
    for n in args.sessions:
        logits = torch.randn(n, 2, T3_TINY.speech_vocab, device=dev)
        attn = torch.rand(n, heads, 1, KV, device=dev).softmax(-1)
        rows = RowSampler(t3, n, max_text=KV - lc)
        for r in range(n):
            rows.start(r, SamplingParams(), None, OFFICIAL, span, prefill)
        alone = PerSession(n, dev, prefill, span)
        slots = list(range(n))
        times = {"per_session": [], "batched": []}
        for rnd in range(args.rounds + 1):
            order = [("per_session", lambda: alone.step(logits, attn)), ("batched", lambda: rows.sample(slots, logits, attn))]
            for name, fn in order if rnd % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    fn()
                if rnd:
                    times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
        row = {"sessions": n, **{f"{k}_ms": round(statistics.median(v), 3) for k, v in times.items()},
               "per_session_ops": count_ops(lambda: alone.step(logits, attn)),
               "batched_ops": count_ops(lambda: rows.sample(slots, logits, attn))}
        row["per_session_ms_per_session"] = round(row["per_session_ms"] / n, 3)
        row["batched_ms_per_session"] = round(row["batched_ms"] / n, 3)
        print(row, flush=True)
        results.append(row)
    meta = {"device": "cpu", "steps": args.steps, "rounds": args.rounds, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
