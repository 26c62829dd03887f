"""Stage timings of the vocoder without synchronizing the device per stage.

A render's stages (flow, then HiFT) are timed by marks on the current thread's stream: on CPU a
`perf_counter` reading, on CUDA an event recorded on the stream (`torch.cuda.Event(enable_timing=
True)`), which costs no sync. The time between two marks is read once, after the render's audio
has come to the host: that copy already waited for the stream, so every earlier mark is done and
`elapsed_time` answers at once. Before, each stage boundary synchronized the stream so that a
`perf_counter` reading meant "this stage is done", which stalled the launch of the next stage's
kernels behind the device at every render.

An event's time is the device's: from when the stream reached one mark to when it reached the
next, so it includes the stream's idle gaps in between (launch latency), as the synchronized wall
time did, but not the host time spent before the first kernel of a stage was queued.
"""

from __future__ import annotations

import time

import torch

__all__ = ["StageClock", "ms_between", "lap_ms"]


class StageClock:
    """`mark()` on `device`'s current stream (CUDA) or the host clock (any other device)."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event


def ms_between(start, end) -> float:
    """Milliseconds from mark `start` to mark `end` (both from `StageClock.mark`, same kind). On
    CUDA this waits for `end`: read it once the work after it was waited for anyway."""
    if isinstance(start, float):
        return 1e3 * (end - start)
    end.synchronize()  # done already when read after the render's host copy
    return start.elapsed_time(end)


def lap_ms(lap) -> float:
    """A stage's milliseconds: `lap` is a number already, or a (start, end) pair of marks."""
    return float(lap) if isinstance(lap, (int, float)) else ms_between(*lap)
