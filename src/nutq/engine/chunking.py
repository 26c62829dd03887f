"""When streaming token2wav renders a chunk, and how neighbouring chunks are joined.

Sizes count *tokens of audio* (40 ms each at 25 tokens/s), not tokens received: a chunk of size k
carries exactly k·960 samples. Releasing audio needs tokens beyond it: the flow's 3-token
look-ahead and the held-back seam frames (8 frames = 4 tokens by default), so chunk i is rendered
once `sum(sizes[:i+1])` tokens of audio are releasable, 7 tokens later by default
(`StreamingToWav.next_due` says when, in tokens received). Counting audio makes the schedule a
playback plan: a chunk covers its own duration of playback, during which the next must be made.
The latency target is a first chunk after 2-4 tokens; with a 3-token look-ahead no frame exists
before the 4th token, so the first chunk's size is counted in audio instead.

Default 3 -> 6 -> 12 -> 24 -> 24 ... (first chunk with token 10): the first chunk is 120 ms, of
which the official trim fade silences 20 ms and fades 20 ms. Fewer tokens leave too little
playback to cover the wait for the second chunk (6 more T3 steps plus one flow + HiFT call); more
delay first audio by one T3 step each. Doubling lets every chunk hide the production of the next
while the number of flow calls (each re-encodes the whole voice prompt) stays small; from then on
one call per 24 tokens (~1 s of audio).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["ChunkSchedule", "SeamConfig"]


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
