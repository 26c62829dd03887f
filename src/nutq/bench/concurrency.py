"""Many streams at once: time to first audio, real-time factor and underruns per stream, T3 tokens/s
per stream and in aggregate, peak memory, for N concurrent requests.

Requests arrive together (all at t=0) or staggered (one every `stagger_s`), each in its own
client thread consuming `tts.stream` as a player would. Latency is measured from each request's
own arrival. `sequential` serves the same requests one after another as a one-at-a-time server
would: a request's time to first audio then includes its wait for the ones before it, which is
the cost concurrency removes.
"""

from __future__ import annotations

import statistics
import threading
import time

import torch

from .latency import _peak_rss_mb, playback_underruns

__all__ = ["SENTENCES", "run_round", "aggregate", "plot"]

# Arabic sentences of a voice agent's typical length, cycled over the streams.
SENTENCES = (
    "مرحبا، كيف يمكنني مساعدتك اليوم؟",
    "تم تأكيد حجزك لليلتين في الفندق.",
    "سيصل طلبك خلال ثلاثين دقيقة تقريبا.",
    "هل تريد أن أرسل لك التفاصيل عبر البريد؟",
    "الطقس غدا مشمس مع رياح خفيفة.",
    "شكرا لاتصالك، نتمنى لك يوما سعيدا.",
)


def _one(tts, text: str, arrive: float, params, voice, seed: int, out: dict, errors: list) -> None:
    delay = arrive - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    t0 = time.perf_counter()
    arrivals, durations = [], []
    try:
        stream = tts.stream(text, voice, "ar", params=params, seed=seed, segment=False)
        for chunk in stream:
            arrivals.append(time.perf_counter() - t0)
            durations.append(chunk.duration)
    except Exception as e:  # noqa: BLE001 - counted and reported, the round goes on
        errors.append(f"{type(e).__name__}: {e}")
        return
    total = time.perf_counter() - t0
    tm = stream.timings
    tokens = sum(t.tokens for t in tm)
    audio_s = sum(durations)
    nonempty = [(a, d) for a, d in zip(arrivals, durations) if d > 0]
    under, stall = playback_underruns([a for a, _ in nonempty], [d for _, d in nonempty])
    out.update(ttfa_ms=1e3 * (stream.first_audio_latency or float("nan")), tokens=tokens,
               tokens_per_s=tokens / total if total > 0 else 0.0, audio_s=audio_s, total_s=total,
               rtf=total / audio_s if audio_s else float("nan"), underruns=under, stall_ms=1e3 * stall)


def run_round(tts, n: int, *, arrival: str = "together", stagger_s: float = 0.25, params=None, voice=None,
              seed: int = 0, sequential: bool = False, label: str = "concurrent") -> dict:
    """Serve `n` requests and return {"streams": [...], **aggregate}; `label` names the concurrent
    mode in the results (e.g. "scheduler" or "thread-per-stream")."""
    if arrival not in ("together", "staggered"):
        raise ValueError(f"arrival must be 'together' or 'staggered', got {arrival!r}")
    cuda = tts.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(tts.device)
    results = [{} for _ in range(n)]
    errors: list[str] = []
    t_start = time.perf_counter() + 0.05
    arrive = [t_start + (i * stagger_s if arrival == "staggered" else 0.0) for i in range(n)]
    t0 = time.perf_counter()
    if sequential:
        # One at a time, but the clock of each request starts at its arrival: waiting counts.
        for i in range(n):
            _one(tts, SENTENCES[i % len(SENTENCES)], arrive[i], params, voice, seed + i, results[i], errors)
            if results[i]:
                wait = max(0.0, time.perf_counter() - results[i]["total_s"] - arrive[i])
                results[i]["ttfa_ms"] += 1e3 * wait
    else:
        threads = [threading.Thread(target=_one, args=(tts, SENTENCES[i % len(SENTENCES)], arrive[i], params, voice,
                                                        seed + i, results[i], errors), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - t0
    streams = [r for r in results if r]
    return {"n": n, "arrival": arrival, "mode": "sequential" if sequential else label, "streams": streams,
            "errors": errors, "wall_s": wall, **aggregate(streams, wall),
            "peak_rss_mb": _peak_rss_mb(),
            "peak_cuda_mb": torch.cuda.max_memory_allocated(tts.device) / 2**20 if cuda else None}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else float("nan")


def aggregate(streams: list[dict], wall_s: float) -> dict:
    ttfa = [s["ttfa_ms"] for s in streams]
    if not streams:
        return {}
    return {
        "ttfa_p50_ms": _pct(ttfa, 0.5), "ttfa_p95_ms": _pct(ttfa, 0.95), "ttfa_p99_ms": _pct(ttfa, 0.99),
        "rtf_median": statistics.median(s["rtf"] for s in streams), "rtf_max": max(s["rtf"] for s in streams),
        "streams_with_underruns": sum(1 for s in streams if s["underruns"]),
        "tokens_per_s_per_stream": statistics.median(s["tokens_per_s"] for s in streams),
        "tokens_per_s_aggregate": sum(s["tokens"] for s in streams) / wall_s if wall_s > 0 else 0.0,
    }


def plot(rounds: list[dict], path) -> bool:
    """TTFA p50/p95 and median RTF against N, one line per mode and arrival; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    keys = sorted({(r["mode"], r["arrival"]) for r in rounds})
    for mode, arrival in keys:
        rs = sorted((r for r in rounds if (r["mode"], r["arrival"]) == (mode, arrival)), key=lambda r: r["n"])
        ns = [r["n"] for r in rs]
        a.plot(ns, [r["ttfa_p50_ms"] for r in rs], "o-", label=f"{mode}/{arrival} p50")
        a.plot(ns, [r["ttfa_p95_ms"] for r in rs], "x--", label=f"{mode}/{arrival} p95")
        b.plot(ns, [r["rtf_median"] for r in rs], "o-", label=f"{mode}/{arrival}")
    a.set(xlabel="concurrent streams", ylabel="time to first audio (ms)", xscale="log", yscale="log")
    b.set(xlabel="concurrent streams", ylabel="real-time factor (median)", xscale="log")
    b.axhline(1.0, color="grey", lw=0.5)
    a.legend(fontsize=7)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
