"""`SynthesisFields`: the synthesis options every protocol accepts, declared once.

Each protocol's request model derives from it (OpenAI's `SpeechRequest` and the native protocol's
`SpeakSettings` directly, the seed's `SeedRequest` and Deepgram's `SpeakQuery` through
`extensions.SynthesisExtensions`), choosing only its own strictness and how unknown fields are
treated; a new option added here appears on all of them, and `extensions.synthesis_request`
carries it into the engine's `SynthesisRequest`. Pydantic only, so that the native protocol's schema tool stays light.

None for temperature and cfg_weight means the official default (0.8 and 0.5, `SamplingParams`),
for seed a random one, for max_tokens the server's cap, for exaggeration the voice's own value.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["SynthesisFields"]


class SynthesisFields(BaseModel):
    seed: int | None = Field(None, ge=0, lt=2**62,
                             description="the same seed, text and settings give the same audio; null: random")
    max_tokens: int | None = Field(None, ge=1, description="speech-token cap per phrase (25 per second of audio); "
                                                           "null: the server's cap")
    temperature: float | None = Field(None, gt=0.0, le=5.0, description="sampling temperature; null: 0.8")
    cfg_weight: float | None = Field(None, ge=0.0, le=2.0,
                                     description="classifier-free guidance weight; null: 0.5")
    exaggeration: float | None = Field(None, ge=0.0, le=2.0, description="emotion intensity; null: the voice's own")
    normalize: bool = Field(True, description="run the Arabic text frontend (numbers, abbreviations, ...)")
    diacritize: bool = Field(False, description="add harakat to Arabic first (server needs the tashkeel extra)")
