"""`nutq.TTS`: the library's sync facade over an `Engine` (see `nutq.engine.engine`).

`synthesize` speaks one utterance on the plain reference loop; `stream` / `astream` speak any
text phrase by phrase through the engine's scheduler, the same path the server runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoints import files as ckfiles
from .engine.alignment import GuardConfig
from .engine.chunking import ChunkSchedule
from .engine.config import EngineConfig
from .engine.engine import Engine
from .engine.flow_options import FlowOptions, parse_flow
from .engine.request import SynthesisRequest
from .engine.sampling import SamplingParams
from .engine.stream import AsyncSpeechStream, Phrase, SpeechStream
from .engine.voice import Voice
from .rates import SAMPLE_RATE

__all__ = ["TTS", "SAMPLE_RATE"]

VoiceLike = Voice | str | Path | bytes | None


class TTS:
    """`TTS(files, device=..., dtype=..., ...)`: every keyword is an `EngineConfig` field (device
    "auto": CUDA when present; dtypes None: bf16 on CUDA; max_sessions None: 4 on CPU, sized from
    free memory on CUDA). The models, voices, pool and scheduler are the engine's (`self.engine`)."""

    def __init__(self, files: ckfiles.CheckpointFiles, device: str = "auto", dtype: str | None = None, *,
                 flow: FlowOptions | str | None = None, **config):
        self.engine = Engine(files, EngineConfig(device=device, dtype=dtype, flow=parse_flow(flow), **config))

    @classmethod
    def from_local(cls, model_dir: str | Path, *, flow: FlowOptions | str | None = None, **kw) -> "TTS":
        flow = parse_flow(flow)
        return cls(ckfiles.resolve(model_dir, flow=flow.kind), flow=flow, **kw)

    @classmethod
    def from_pretrained(cls, revision: str | None = None, *, flow: FlowOptions | str | None = None,
                        meanflow_revision: str | None = None, **kw) -> "TTS":
        """Download (or reuse from the Hub cache) the multilingual files, and with `flow="meanflow"`
        the distilled decoder from the Turbo repository (`meanflow_revision` pins it)."""
        flow = parse_flow(flow)
        files = ckfiles.resolve(None, revision=revision, flow=flow.kind, meanflow_revision=meanflow_revision)
        return cls(files, flow=flow, **kw)

    def __getattr__(self, name: str):
        # models, tokenizer, voices, pool, flow, device, files, model_id, text_ids, phrases, ...
        if name == "engine":  # not set yet: __init__ failed
            raise AttributeError(name)
        return getattr(self.engine, name)

    def synthesize(self, text: str, language: str = "ar", voice: VoiceLike = None, *, seed: int | None = None,
                   exaggeration: float = 0.5, cfg_weight: float = 0.5, temperature: float = 0.8,
                   repetition_penalty: float = 2.0, min_p: float = 0.05, top_p: float = 1.0,
                   max_new_tokens: int = 1000, normalize: bool = True, watermark: bool | None = None,
                   diacritize: bool = False, flow: FlowOptions | None = None) -> np.ndarray:
        """Text -> (N,) float32 audio at 24 kHz, with the official defaults, in one utterance.

        `watermark`: None applies the Perth watermark (as the official pipeline does) when
        resemble-perth is installed; True requires it (WatermarkUnavailable if missing); False skips it.
        """
        params = SamplingParams(cfg_weight=cfg_weight, temperature=temperature, repetition_penalty=repetition_penalty,
                                min_p=min_p, top_p=top_p, max_new_tokens=max_new_tokens)
        req = SynthesisRequest(text, voice, language, params, seed, exaggeration, normalize, diacritize=diacritize,
                               flow=flow)
        return self.engine.synthesize(req, watermark)

    def stream(self, text: str, voice: VoiceLike = None, language: str = "ar", *,
               params: SamplingParams | None = None, seed: int | None = None, exaggeration: float | None = None,
               guard: GuardConfig | str | None = "official", schedule: ChunkSchedule | None = None,
               normalize: bool = True, segment: bool = True, diacritize: bool = False,
               flow: FlowOptions | None = None) -> SpeechStream:
        """Speak `text` as a stream of `AudioChunk`s (24 kHz float32) while T3 is still generating.

        `voice`: a `Voice` (e.g. from `tts.voices.get(id)`), a reference clip, a nutq voice file, or
        None for the built-in voice; `exaggeration` None keeps the voice's own value. `params`
        defaults to the official sampling settings; `guard` is a profile name, a `GuardConfig` or
        None (no alignment guard); `schedule` sets the chunk sizes (default: the decoder's).
        `segment=False` speaks the text as one utterance (as the official `generate` does).
        `diacritize` adds harakat to undiacritized Arabic first (the `tashkeel` extra). `flow`
        changes the loaded decoder's steps or CFG for this stream only. The stream can also be
        read with `async for` (see `astream`)."""
        return self.engine.stream(SynthesisRequest(text, voice, language, params or SamplingParams(), seed,
                                                   exaggeration, normalize, segment, diacritize, guard, flow,
                                                   schedule))

    def astream(self, *args, **kw) -> AsyncSpeechStream:
        """`async for chunk in tts.astream(...)`: `stream`, read on the event loop (no thread)."""
        return AsyncSpeechStream(self.stream(*args, **kw))

    def phrases(self, text: str, language: str = "ar", normalize: bool = True, segment: bool = True,
                diacritize: bool = False) -> list[Phrase]:
        return self.engine.phrases(text, language, normalize, segment, diacritize)

    @property
    def phrase_token_limit(self) -> int:
        return self.engine.planner.token_limit

    def scheduler_stats(self):
        return self.engine.stats()

    def close(self) -> None:
        self.engine.close()
