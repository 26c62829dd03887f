"""`SynthesisRequest`: everything one synthesis asks of the engine, built once per request (by the
library's `TTS.stream`, or by a server protocol from its validated fields) and never changed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ClientError
from .alignment import GuardConfig
from .chunking import ChunkSchedule
from .flow_options import FlowOptions
from .output import OutputFormat
from .sampling import SamplingParams
from .voice import Voice

__all__ = ["SynthesisRequest", "DEFAULT_LANGUAGE"]

DEFAULT_LANGUAGE = "ar"


@dataclass(frozen=True)
class SynthesisRequest:
    """text: what to say; voice: a `Voice`, a voice id of the engine's voice cache, a reference
    clip (path or bytes) or a nutq voice file, None for the built-in voice; language: None for
    Arabic; params: sampling (max tokens per phrase included); seed: None draws one; exaggeration:
    None keeps the voice's own; guard: an alignment-guard profile name, a `GuardConfig` or None;
    normalize / diacritize: the Arabic text frontend, and harakat first (the `tashkeel` extra);
    segment: speak phrase by phrase (False: one utterance, as the official `generate`); flow:
    steps/CFG of the loaded decoder for this request only; schedule: chunk sizes (None: the
    decoder's); output: how the audio leaves the server (`OutputFormat`, checked when it is built;
    the engine itself always produces float32 at 24 kHz, which the default describes)."""

    text: str
    voice: Voice | str | Path | bytes | None = None
    language: str | None = None
    params: SamplingParams = SamplingParams()
    seed: int | None = None
    exaggeration: float | None = None
    normalize: bool = True
    segment: bool = True
    diacritize: bool = False
    guard: GuardConfig | str | None = "official"
    flow: FlowOptions | None = None
    schedule: ChunkSchedule | None = None
    output: OutputFormat = OutputFormat()

    def __post_init__(self):
        if not isinstance(self.output, OutputFormat):
            raise ClientError(f"output must be an OutputFormat, got {type(self.output).__name__}")

    @property
    def lang(self) -> str:
        return self.language or DEFAULT_LANGUAGE
