"""Vocoder stage timings (`engine.stage_clock`): host-clock marks on CPU (CUDA events: gpu_smoke's
`stage_clock` check), and a render's flow/HiFT times that add up within its wall time."""

from __future__ import annotations

import time

import torch

from nutq.engine.kv_pool import KVPool
from nutq.engine.stage_clock import StageClock, lap_ms, ms_between

from tests.test_scheduler import CACHE_LEN, make_session, tts, voice  # noqa: F401 - fixtures

__all__ = ["tts", "voice"]


def test_cpu_marks_are_the_host_clock():
    clock = StageClock(torch.device("cpu"))
    a = clock.mark()
    time.sleep(0.02)
    b = clock.mark()
    assert isinstance(a, float) and 15 <= ms_between(a, b) <= 1000
    assert lap_ms((a, b)) == ms_between(a, b) and lap_ms(2.5) == 2.5


def test_render_stage_times_fit_in_the_render(tts, voice):
    pool = KVPool(tts.t3.cfg.llama, 1, CACHE_LEN)
    s = make_session(tts, voice, pool, 0)
    t0 = time.perf_counter()
    chunks = list(s.run())
    wall_ms = 1e3 * (time.perf_counter() - t0)
    timings = s._vocoder.timings
    assert len(timings) == len(chunks) > 1
    assert all(t.flow_ms > 0 and t.hift_ms > 0 for t in timings)
    assert sum(t.flow_ms + t.hift_ms for t in timings) <= 1e3 * s.timings.vocoder_s <= wall_ms
    assert s.timings.flow_ms == sum(t.flow_ms for t in timings)
