"""GPU smoke test: the CUDA paths that CPU tests cannot reach, in under ten minutes on one H100/H200.

    python benchmarks/gpu_smoke.py [--model-dir /tmp/full] [--sessions 1 8 32 64] [--only NAME ...]
                                   [--json OUT.json] [--list]

Prints PASS / FAIL / SKIP per check and exits 1 if any check failed (2 without CUDA, with a
message). Checks on tiny random models need nothing; `full_capture` and `flow_render` need a
full-size checkpoint (`nutq make-checkpoint DIR --size full`) and are skipped without
`--model-dir`. `--json` also writes every check's numbers.

  graph_replay_fp32/bf16  captured BatchedStep replays equal solo decode steps, no host sync in a
                          replay (`torch.cuda.set_sync_debug_mode("error")`), no empty-graph warning
  sdpa_kernel             T3's attention runs with the math SDPA backend disabled (which one runs)
  host_step               host ms per step (batched step + one sampling call) for N sessions
  inv_freq_bf16           a bf16-loaded T3 keeps RoPE inv_freq in fp32, angles equal fp32's
  second_device           graph replay on cuda:1 (skipped with one GPU)
  scheduler_e2e           tiny checkpoint, 8 threads through one Scheduler: 960 samples per token,
                          no hang, pool and memory back afterwards
  stage_clock             CUDA-event stage timings: positive, not above the synchronized wall time
  scheduler_vs_solo       tiny checkpoint, fp32: sessions admitted together (one batched prefill)
                          and decoded with pipelined host reads draw the tokens of solo runs
  full_capture            full-size T3 (bf16): capture of every (batch, span) graph, ms per replay
  flow_render             full-size flow render ms for fp32 / TF32 / bf16, batch 1 and 8, peak MiB
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import torch

from nutq.engine.alignment import OFFICIAL
from nutq.engine.batched_step import BatchedStep
from nutq.engine.decode import decode_step, prefill
from nutq.engine.kv_pool import ROWS_PER_SESSION, KVPool
from nutq.models.loading import load_module
from nutq.models.random_init import randomize_module
from nutq.models.t3 import T3, T3_TINY

PROBES = OFFICIAL.heads


class Skip(Exception):
    """The check does not apply here (say why)."""


def tiny_t3(device, dtype=torch.float32) -> T3:
    state = randomize_module(T3(T3_TINY), 0).state_dict()
    return load_module(lambda: T3(T3_TINY), state, dtype=None if dtype == torch.float32 else dtype, device=device)


def prefill_pool(t3: T3, slots: int, max_len: int) -> tuple[KVPool, list[int]]:
    dev, dtype = t3.speech_head.weight.device, t3.speech_head.weight.dtype
    pool = KVPool(t3.cfg.llama, slots, max_len, device=dev, dtype=dtype)
    lengths = []
    for s in range(slots):
        g = torch.Generator().manual_seed(s)
        with torch.inference_mode():
            cond = t3.conditioning(torch.randn(1, t3.cfg.speaker_dim, generator=g).to(dev, dtype),
                                   torch.randint(0, t3.cfg.num_valid_speech, (1, 40), generator=g).to(dev), 0.5)
        text = torch.randint(1, 700, (10 + 3 * s % 30,), generator=g).to(dev)
        _, _, L = prefill(t3, cond, text, pool.cache.rows(ROWS_PER_SESSION * s, ROWS_PER_SESSION), PROBES)
        lengths.append(L)
    return pool, lengths


def graph_replay(dtype: torch.dtype, device: str = "cuda:0") -> dict:
    t3 = tiny_t3(device, dtype)
    slots = [0, 2, 3]
    pool_g, lengths = prefill_pool(t3, 4, 256)
    pool_s, _ = prefill_pool(t3, 4, 256)
    step = BatchedStep(t3, pool_g, PROBES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step.capture()
    empty = [str(w.message) for w in caught if "empty" in str(w.message).lower()]
    if empty:
        raise AssertionError(f"empty-graph warnings during capture: {empty[:2]}")
    tol = 1e-3 if dtype == torch.float32 else 0.05  # relative to the largest logit
    worst = 0.0
    tokens = torch.full((len(slots),), 100, dtype=torch.long, device=device)
    for k in range(8):
        sp, pos = [k + 1] * len(slots), [lengths[s] + k for s in slots]
        torch.cuda.set_sync_debug_mode("error")
        try:
            logits, _ = step(slots, tokens, sp, pos)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        for i, s in enumerate(slots):
            solo, _ = decode_step(t3, tokens[i:i + 1], sp[i], pos[i],
                                  pool_s.cache.rows(ROWS_PER_SESSION * s, ROWS_PER_SESSION), PROBES)
            worst = max(worst, ((logits[i] - solo).abs().max() / solo.abs().max()).item())
        tokens = logits[:, 0].argmax(-1)
    if not worst <= tol:
        raise AssertionError(f"replay differs from solo decode by {worst:.3g} (relative; tolerance {tol})")
    return {"relative_error": worst, "device": device}


def sdpa_kernel_check(args) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    t3 = tiny_t3("cuda", torch.bfloat16)
    pool, lengths = prefill_pool(t3, 2, 256)
    eager = BatchedStep(t3, pool, PROBES, cuda_graphs=False, static=True)
    tokens = torch.full((2,), 100, dtype=torch.long, device="cuda")
    ran = []
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("mem-efficient", SDPBackend.EFFICIENT_ATTENTION)):
        try:
            with sdpa_kernel([backend]):
                eager([0, 1], tokens, [1, 1], [lengths[0], lengths[1]])
                torch.cuda.synchronize()
            ran.append(name)
        except RuntimeError:
            pass
    if not ran:
        raise AssertionError("T3's decode step needs the math SDPA backend (flash and mem-efficient both refused it)")
    return {"backends_that_run": ran}


def host_step(args) -> dict:
    from nutq.engine.row_sampler import RowSampler
    from nutq.engine.sampling import SamplingParams

    t3 = tiny_t3("cuda", torch.bfloat16)
    out = {}
    for n in args.sessions:
        pool, lengths = prefill_pool(t3, n, 256)
        step = BatchedStep(t3, pool, PROBES)
        step.capture()
        rows = RowSampler(t3, n, max_text=256 - t3.cfg.len_cond)
        attn0 = torch.rand(len(PROBES), 256, 256, device="cuda")
        for s in range(n):
            rows.start(s, SamplingParams(), torch.Generator("cuda").manual_seed(s), OFFICIAL,
                       (t3.cfg.len_cond, lengths[s] - 2), attn0)
        slots, tokens, host = list(range(n)), torch.full((n,), 100, dtype=torch.long, device="cuda"), []
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for k in range(25):
            if k == 5:
                start.record()
            t0 = time.perf_counter()
            logits, attn = step(slots, tokens, [k + 1] * n, [lengths[s] + k for s in slots])
            tokens, _ = rows.sample(slots, logits, attn)
            if k >= 5:
                host.append(1e3 * (time.perf_counter() - t0))
        end.record()
        torch.cuda.synchronize()
        out[n] = {"host_ms": round(sorted(host)[len(host) // 2], 3), "device_ms": round(start.elapsed_time(end) / 20, 3)}
        print(f"    N={n}: {out[n]}", flush=True)
    lo, hi = out[min(out)]["host_ms"], out[max(out)]["host_ms"]
    if hi > 2 * lo + 3.0:
        raise AssertionError(f"host time per step grows with sessions: {lo} ms -> {hi} ms")
    return out


def inv_freq_bf16(args) -> dict:
    ref, half = tiny_t3("cuda"), tiny_t3("cuda", torch.bfloat16)
    if half.tfmr.inv_freq.dtype != torch.float32:
        raise AssertionError(f"bf16 T3 has inv_freq in {half.tfmr.inv_freq.dtype}")
    pos = torch.arange(1500, device="cuda")
    err = (half.tfmr.rope(pos, torch.float32)[0] - ref.tfmr.rope(pos, torch.float32)[0]).abs().max().item()
    if err != 0.0:
        raise AssertionError(f"bf16 RoPE cos differs from fp32 by {err}")
    return {"inv_freq": str(half.tfmr.inv_freq.dtype)}


def second_device(args) -> dict:
    if torch.cuda.device_count() < 2:
        raise Skip("one GPU")
    return graph_replay(torch.float32, "cuda:1")


def scheduler_e2e(args) -> dict:
    from nutq.checkpoints.make import make_checkpoint
    from nutq.engine.sampling import SamplingParams
    from nutq.engine.scheduler import Scheduler
    from nutq.engine.session import Session
    from nutq.tts import TTS

    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(Path(tmp) / "tiny", size="tiny")
        tts = TTS.from_local(Path(tmp) / "tiny", device="cuda")
    gc.collect()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    t3 = tts.t3
    pool = KVPool(t3.cfg.llama, 8, 512, device="cuda", dtype=t3.speech_head.weight.dtype)
    results, errors = {}, []
    with Scheduler(t3, tts.s3gen, pool) as sched:
        def speak(i: int) -> None:
            try:
                s = Session(t3, tts.s3gen, pool, tts.text_ids("مرحبا بكم في نطق " * (1 + i % 3)), tts.default_voice,
                            SamplingParams(max_new_tokens=80), generator=torch.Generator("cuda").manual_seed(i),
                            noise_generator=torch.Generator("cuda").manual_seed(100 + i))
                chunks = list(sched.run(s))
                results[i] = (sum(len(c.audio) for c in chunks), len(s.tokens), s.timings.flow_ms)
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=speak, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        if any(t.is_alive() for t in threads):
            raise AssertionError("a stream did not finish within 120 s (hang)")
    if errors:
        raise AssertionError(f"streams failed: {errors[:2]}")
    bad = {i: r for i, r in results.items() if r[0] != 960 * r[1]}
    if bad:
        raise AssertionError(f"audio is not 960 samples per token: {bad}")
    untimed = {i: r for i, r in results.items() if r[1] and not r[2] > 0}
    if untimed:
        raise AssertionError(f"streams without a positive flow time (CUDA-event stage timings): {untimed}")
    in_use = pool.in_use
    del sched, pool
    gc.collect()
    torch.cuda.synchronize()
    grown = (torch.cuda.memory_allocated() - base) / 2**20
    if in_use or grown > 64:
        raise AssertionError(f"after the streams {in_use} slots are leased and {grown:.0f} MiB more are allocated")
    return {"streams": len(results), "tokens": sum(r[1] for r in results.values()), "memory_growth_mib": round(grown, 1)}


def stage_clock(args) -> dict:
    from nutq.engine.stage_clock import StageClock, ms_between

    a = torch.randn(4096, 4096, device="cuda")
    clock = StageClock(torch.device("cuda"))
    a @ a
    torch.cuda.synchronize()
    t0, m0 = time.perf_counter(), clock.mark()
    for _ in range(8):
        a @ a
    m1 = clock.mark()
    torch.cuda.synchronize()
    wall = 1e3 * (time.perf_counter() - t0)
    ev = ms_between(m0, m1)
    if not 0 < ev <= wall * 1.05 + 0.5:
        raise AssertionError(f"event time {ev:.3f} ms vs synchronized wall time {wall:.3f} ms")
    return {"event_ms": round(ev, 3), "wall_ms": round(wall, 3)}


def scheduler_vs_solo(args) -> dict:
    from nutq.checkpoints.make import make_checkpoint
    from nutq.engine.sampling import SamplingParams
    from nutq.engine.scheduler import Scheduler
    from nutq.engine.session import Session
    from nutq.tts import TTS

    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(Path(tmp) / "tiny", size="tiny")
        tts = TTS.from_local(Path(tmp) / "tiny", device="cuda", dtype="fp32", flow_dtype="fp32")
    t3, texts = tts.t3, ["مرحبا بكم", "هذا نص آخر أطول قليلا من الأول", "كيف حالك؟"]

    def session(pool, i):
        return Session(t3, tts.s3gen, pool, tts.text_ids(texts[i]), tts.default_voice, SamplingParams(max_new_tokens=40),
                       generator=torch.Generator("cuda").manual_seed(i),
                       noise_generator=torch.Generator("cuda").manual_seed(100 + i))

    solo = []
    for i in range(3):
        s = session(KVPool(t3.cfg.llama, 1, 256, device="cuda"), i)
        list(s.run())
        solo.append(s.tokens)
    pool = KVPool(t3.cfg.llama, 4, 256, device="cuda")
    with Scheduler(t3, tts.s3gen, pool) as sched:
        if not sched.pipeline:
            raise AssertionError("the scheduler should pipeline its host reads on CUDA")
        ss = [session(pool, i) for i in range(3)]
        with sched._cv:  # admitted at one step boundary: one batched prefill
            its = [sched.run(s) for s in ss]
        for it in its:
            list(it)
    differ = [i for i, s in enumerate(ss) if s.tokens != solo[i]]
    if differ:
        raise AssertionError(f"sessions {differ} drew other tokens than alone (a rounding edge would show here)")
    return {"sessions": 3, "tokens": sum(len(t) for t in solo)}


def _full(args):
    if args.model_dir is None:
        raise Skip("needs --model-dir with a full-size checkpoint")
    from nutq.tts import TTS

    return TTS


def full_capture(args) -> dict:
    tts = _full(args).from_local(args.model_dir, device="cuda", dtype="bf16")
    t3 = tts.t3
    pool = KVPool(t3.cfg.llama, max(args.sessions), 1536, device="cuda", dtype=t3.speech_head.weight.dtype)
    step = BatchedStep(t3, pool, PROBES)
    t0 = time.perf_counter()
    step.capture()
    out = {"capture_s": round(time.perf_counter() - t0, 2), "ms_per_step": {}}
    for size in step.ladder:
        slots = list(range(size))
        tokens = torch.full((size,), 100, dtype=torch.long, device="cuda")
        for span in step.spans:
            pos = [span - 2] * size
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            step(slots, tokens, [1] * size, pos)
            a.record()
            for _ in range(10):
                logits, _ = step(slots, tokens, [1] * size, pos)
            b.record()
            torch.cuda.synchronize()
            if not torch.isfinite(logits).all():
                raise AssertionError(f"non-finite logits at batch {size}, span {span}")
            out["ms_per_step"][f"{size}x{span}"] = round(a.elapsed_time(b) / 10, 3)
    print(f"    {out}", flush=True)
    return out


def flow_render(args) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from vocoder_batch import requests

    from nutq.engine.token2wav import flow_mel, flow_mels

    TTS = _full(args)
    out = {}
    for mode, flow_dtype, tf32 in (("fp32", None, False), ("tf32", None, True), ("bf16", "bf16", False)):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        s3gen = TTS.from_local(args.model_dir, device="cuda", flow_dtype=flow_dtype).s3gen
        reqs = requests(s3gen, 150, s3gen.default_solver())
        for b in (1, 8):
            run = (lambda: flow_mel(s3gen, reqs[0])) if b == 1 else (lambda: flow_mels(s3gen, reqs[:b]))
            with torch.inference_mode():
                run()
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                for _ in range(3):
                    run()
                torch.cuda.synchronize()
            out[f"{mode}_b{b}"] = {"ms": round(1e3 * (time.perf_counter() - t0) / 3, 2),
                                   "peak_mib": round(torch.cuda.max_memory_allocated() / 2**20)}
        del s3gen
        gc.collect()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    print(f"    {out}", flush=True)
    return out


CHECKS = {
    "graph_replay_fp32": lambda a: graph_replay(torch.float32),
    "graph_replay_bf16": lambda a: graph_replay(torch.bfloat16),
    "sdpa_kernel": sdpa_kernel_check,
    "host_step": host_step,
    "inv_freq_bf16": inv_freq_bf16,
    "second_device": second_device,
    "scheduler_e2e": scheduler_e2e,
    "stage_clock": stage_clock,
    "scheduler_vs_solo": scheduler_vs_solo,
    "full_capture": full_capture,
    "flow_render": flow_render,
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", help="a full-size checkpoint (for full_capture and flow_render)")
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 8, 32, 64], help="N for host_step")
    ap.add_argument("--only", nargs="+", choices=sorted(CHECKS), help="run only these checks")
    ap.add_argument("--json", help="write every check's status and numbers here")
    ap.add_argument("--list", action="store_true", help="print the checks and exit")
    args = ap.parse_args(argv)
    if any(n < 1 for n in args.sessions):
        ap.error("--sessions must be >= 1")
    if args.model_dir is not None and not Path(args.model_dir).is_dir():
        ap.error(f"--model-dir {args.model_dir} is not a directory")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        print("\n".join(CHECKS))
        return 0
    if not torch.cuda.is_available():
        print(f"gpu_smoke: no CUDA device here (torch {torch.__version__}, built for CUDA "
              f"{torch.version.cuda or 'none'}); run it on a GPU machine", file=sys.stderr)
        return 2
    report, failed = {}, 0
    print(f"gpu_smoke on {torch.cuda.get_device_name(0)} ({torch.cuda.device_count()} device(s)), torch {torch.__version__}")
    for name in args.only or CHECKS:
        t0 = time.perf_counter()
        try:
            detail, status = CHECKS[name](args), "PASS"
        except Skip as e:
            detail, status = str(e), "SKIP"
        except Exception as e:  # noqa: BLE001 - one failing check must not hide the others
            detail, status = f"{type(e).__name__}: {e}", "FAIL"
            failed += 1
        finally:
            torch.cuda.set_sync_debug_mode("default")
        report[name] = {"status": status, "detail": detail, "s": round(time.perf_counter() - t0, 1)}
        print(f"{status} {name} ({report[name]['s']} s): {detail}", flush=True)
        gc.collect()
        torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    print(f"{len(report) - failed}/{len(report)} checks did not fail")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
