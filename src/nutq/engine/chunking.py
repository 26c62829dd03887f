"""When streaming token2wav renders a chunk, and how neighbouring chunks are joined.

Sizes count *tokens of audio* (40 ms each at 25 tokens/s), not tokens received: a chunk of size k
carries exactly k·960 samples. Releasing audio needs tokens beyond it: the flow's 3-token
look-ahead and the held-back seam frames (8 frames = 4 tokens by default), so chunk i is rendered
once `sum(sizes[:i+1])` tokens of audio are releasable, 7 tokens later by default
(`StreamingToWav.next_due` says when, in tokens received). Counting audio makes the schedule a
playback plan: a chunk covers its own duration of playback, during which the next must be made.
A first chunk "after 2-4 tokens received" is impossible: with a 3-token look-ahead no frame exists
before the 4th token, so the first chunk's size is counted in audio instead.

Every render costs about the same whatever its size, because the flow re-encodes and re-solves
the whole voice prompt (its attention is bidirectional: nothing can be cached). So the schedule
trades first-audio latency (small first chunks) against the number of renders (large later ones),
and the right sizes depend on what one render costs. Playback stays ahead while, for every chunk,
size_i · 40 ms >= size_{i+1} · (one T3 step) + (one render).

`CFM_SCHEDULE`, for the official 10-step CFG decoder: 3 -> 6 -> 12 -> 24 -> 24 ... (first chunk
with token 10). The first chunk is 120 ms, of which the official trim fade silences 20 ms and fades
20 ms. Fewer tokens leave too little playback to cover the wait for the second chunk (6 more T3
steps plus one flow + HiFT call); more delay first audio by one T3 step each. Doubling lets every
chunk hide the production of the next while the number of flow calls stays small; from then on one
call per 24 tokens (~1 s of audio).

`MEANFLOW_SCHEDULE`, for the distilled 2-step decoder: 2 -> 4 -> 8 -> 16 -> 16 ... (first chunk with
token 9). A render is far cheaper (2 estimator passes of one row instead of 10 of two; measured on
CPU at full size, benchmarks/flow_choice.py in BENCHMARKS.md: 7.8x less in fp32, 15x in bf16, the
flow encoder being the same), so the first chunk can be one token smaller (80 ms: 40 ms of audio
after the 40 ms trim fade; a 1-token first chunk would be the fade alone), which saves one T3 step
of first-audio latency, and the wait for the second chunk (4 T3 steps + one cheap render) should
still fit in its 80 ms on a GPU (not yet measured there). Capping at 16 instead of 24 spreads the
steady renders more evenly over playback (smaller bursts for a batched vocoder) at a flow cost per
token still 5x (fp32) to 10x (bf16) below the 10-step decoder's at 24.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["ChunkSchedule", "SeamConfig", "CFM_SCHEDULE", "MEANFLOW_SCHEDULE"]


@dataclass(frozen=True)
class ChunkSchedule:
    """Chunk sizes in tokens of audio: `first`, then ×`growth` (rounded up) until `max_size`."""

    first: int = 3
    growth: float = 2.0
    max_size: int = 24

    def __post_init__(self):
        if not isinstance(self.first, int) or self.first < 1:
            raise ValueError(f"ChunkSchedule.first must be an int >= 1 token, got {self.first!r}")
        if not isinstance(self.max_size, int) or self.max_size < self.first:
            raise ValueError(f"ChunkSchedule.max_size must be an int >= first ({self.first}), got {self.max_size!r}")
        if not (isinstance(self.growth, (int, float)) and math.isfinite(self.growth) and self.growth >= 1.0):
            raise ValueError(f"ChunkSchedule.growth must be a finite number >= 1.0, got {self.growth!r}")

    def sizes(self) -> Iterator[int]:
        """The chunk sizes in order (an endless iterator; the utterance ends it)."""
        size = self.first
        while True:
            yield size
            size = min(self.max_size, math.ceil(size * self.growth))

    def boundaries(self) -> Iterator[int]:
        """Cumulative tokens of audio at the end of each chunk: 3, 9, 21, 45, 69, ... by default."""
        total = 0
        for size in self.sizes():
            total += size
            yield total


@dataclass(frozen=True)
class SeamConfig:
    """How chunks are joined, in mel frames (20 ms, 480 samples each).

    context_frames: frames before the first unreleased frame that HiFT re-renders, so that its
        convolutions see signal, not zero padding, where new audio begins. Measured on random
        weights, seams stop improving beyond 8.
    holdback_frames: frames at the end of each render not released yet. HiFT's receptive field
        is about ±12 frames, so audio near a render's end depends on mel that does not exist yet
        (and the flow's last frames lack right context); the next render replaces them. Measured
        on random weights with the flow held fixed, the error against offline at a seam is 0.74
        (relative) holding back 2 frames, 0.58 for 4, 0.28 for 6, 0.08 for 8. CosyVoice 2, whose
        HiFT this is, also overlaps 8 frames. Each frame delays a chunk by 20 ms of audio.
    crossfade_frames: the first frames of each new render are cross-faded (raised cosine, gains
        summing to 1: both renders share one excitation, so they are correlated) with the previous
        render's held-back audio. At most `holdback_frames`: that audio must not be released yet.
    """

    context_frames: int = 8
    holdback_frames: int = 8
    crossfade_frames: int = 8

    def __post_init__(self):
        for name in ("context_frames", "holdback_frames", "crossfade_frames"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"SeamConfig.{name} must be an int >= 0, got {v!r}")
        if self.crossfade_frames > self.holdback_frames:
            raise ValueError(
                f"SeamConfig.crossfade_frames ({self.crossfade_frames}) must not exceed holdback_frames "
                f"({self.holdback_frames}): the cross-fade needs audio that has not been released yet"
            )


# Defaults per decoder (`FlowOptions.schedule()`); why these sizes: see the module docstring.
CFM_SCHEDULE = ChunkSchedule()
MEANFLOW_SCHEDULE = ChunkSchedule(first=2, growth=2.0, max_size=16)
