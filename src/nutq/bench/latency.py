"""One streaming request measured stage by stage, and medians over trials.

Per trial: frontend (phrase cut, normalization, tokenization), T3 prefill, T3 decode tokens/s,
the first chunk's vocoder time (flow + HiFT), time to first audio, the gaps between chunks
against the audio each chunk carries (an underrun is a chunk that arrives after everything
before it has finished playing, with playback starting at the first chunk), real-time factor
and peak memory.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

import torch

__all__ = ["measure_stream", "summarize", "playback_underruns"]


def playback_underruns(arrivals: list[float], durations: list[float]) -> tuple[int, float]:
    """(number of underruns, total stall seconds) for chunks arriving at `arrivals` (s) with
    `durations` (s), playback starting when the first chunk arrives and stalling when dry."""
    if not arrivals:
        return 0, 0.0
    play_end = arrivals[0] + durations[0]
    count, stall = 0, 0.0
    for t, d in zip(arrivals[1:], durations[1:]):
        if t > play_end + 1e-9:
            count += 1
            stall += t - play_end
            play_end = t
        play_end += d
    return count, stall


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def measure_stream(tts, text: str, *, voice=None, language: str = "ar", params=None, seed: int = 0,
                   guard="official", schedule=None, segment: bool = False, flow=None,
                   until_first_audio: bool = False) -> dict:
    """Run one request through `tts.stream` and return its per-stage numbers (seconds unless _ms).

    `until_first_audio` stops (closes the stream) at the first chunk with audio: the numbers up to
    first audio are the same, whole-stream ones (RTF, gaps, renders) then cover only that chunk."""
    cuda = tts.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(tts.device)
    t0 = time.perf_counter()
    stream = tts.stream(text, voice, language, params=params, seed=seed, guard=guard, schedule=schedule,
                        segment=segment, flow=flow)
    t_frontend = time.perf_counter() - t0
    arrivals, durations = [], []
    for chunk in stream:
        arrivals.append(time.perf_counter() - t0)
        durations.append(chunk.duration)
        if until_first_audio and chunk.duration > 0:
            stream.close()
            break
    total = time.perf_counter() - t0
    if cuda:
        torch.cuda.synchronize(tts.device)
    tm = stream.timings
    tokens = sum(t.tokens for t in tm)
    decode_s = sum(t.decode_s for t in tm)
    audio_s = sum(durations)
    nonempty = [a for a, d in zip(arrivals, durations) if d > 0]
    under, stall = playback_underruns(nonempty, [d for d in durations if d > 0])
    gaps = [b - a for a, b in zip(nonempty, nonempty[1:])]
    first = tm[0]
    return {
        "frontend_ms": 1e3 * t_frontend,
        "prefill_ms": 1e3 * first.prefill_s,
        "first_token_ms": 1e3 * (first.first_token_s or 0.0),
        "first_chunk_vocoder_ms": 1e3 * (first.first_chunk_vocoder_s or 0.0),
        "first_chunk_flow_ms": first.first_chunk_flow_ms or 0.0,
        "first_chunk_hift_ms": first.first_chunk_hift_ms or 0.0,
        "renders": sum(t.renders for t in tm),
        "flow_ms_per_render": sum(t.flow_ms for t in tm) / max(1, sum(t.renders for t in tm)),
        "ttfa_ms": 1e3 * (stream.first_audio_latency or float("nan")),
        "t3_tokens": tokens,
        "t3_tokens_per_s": tokens / decode_s if decode_s > 0 else 0.0,
        "vocoder_s": sum(t.vocoder_s for t in tm),
        "chunks": len(arrivals),
        "max_gap_ms": 1e3 * max(gaps, default=0.0),
        "underruns": under,
        "stall_ms": 1e3 * stall,
        "audio_s": audio_s,
        "total_s": total,
        "rtf": total / audio_s if audio_s > 0 else float("nan"),
        "phrases": len(tm),
        "peak_rss_mb": _peak_rss_mb(),
        "peak_cuda_mb": torch.cuda.max_memory_allocated(tts.device) / 2**20 if cuda else None,
    }


def summarize(trials: list[dict]) -> dict:
    """Median of every numeric field, plus p95 of time to first audio."""
    out = {}
    for k, v in trials[0].items():
        vals = [t[k] for t in trials if isinstance(t.get(k), (int, float))]
        if vals:
            out[k] = statistics.median(vals)
    ttfa = sorted(t["ttfa_ms"] for t in trials)
    out["ttfa_p95_ms"] = ttfa[min(len(ttfa) - 1, round(0.95 * (len(ttfa) - 1)))]
    return out
