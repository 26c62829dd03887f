"""nutq's synthesis options on protocols that have no words for them (Deepgram's query string, the
seed's request JSON), and one way to validate a protocol's request shape into an `ApiError`.

A client of those protocols that sends none of these fields gets the official sampling defaults,
a random seed and the server's token cap, exactly as before the fields existed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..engine.sampling import SamplingParams
from .context import StreamOptions
from .errors import ApiError

__all__ = ["SynthesisExtensions", "validate"]

M = TypeVar("M", bound=BaseModel)


class SynthesisExtensions(BaseModel):
    """Optional fields every compatibility protocol accepts. Unknown fields are ignored: these
    protocols have clients that send their original service's other options."""

    model_config = ConfigDict(extra="ignore")

    seed: int | None = Field(None, ge=0, lt=2**62,
                             description="the same seed, text and settings give the same audio")
    max_tokens: int | None = Field(None, ge=1, description="speech-token cap per phrase (25 per second)")
    temperature: float | None = Field(None, gt=0.0, le=5.0)
    cfg_weight: float | None = Field(None, ge=0.0, le=2.0)
    exaggeration: float | None = Field(None, ge=0.0, le=2.0, description="emotion intensity; None keeps the voice's")
    normalize: bool = Field(True, description="run the Arabic text frontend (numbers, abbreviations, ...)")
    diacritize: bool = Field(False, description="add harakat to Arabic first (server needs the tashkeel extra)")

    def stream_options(self, text: str, voice: str, language: str | None, max_new_tokens: int) -> StreamOptions:
        """`max_new_tokens`: the server's cap, used when the request sets none (open_stream
        refuses a request above it)."""
        params = SamplingParams(max_new_tokens=self.max_tokens or max_new_tokens)
        if self.temperature is not None:
            params = replace(params, temperature=self.temperature)
        if self.cfg_weight is not None:
            params = replace(params, cfg_weight=self.cfg_weight)
        return StreamOptions(text, voice, language, params, self.seed, self.exaggeration, self.normalize,
                             diacritize=self.diacritize)


def validate(model: type[M], data: object, *, strict: bool = False) -> M:
    """`model` from `data` (a dict of JSON or query values), or a 400 `ApiError` naming the field.
    `strict` for JSON, whose values have types ("1" is not a seed); query values are all strings."""
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        msg = first.get("msg", "invalid request")
        raise ApiError(400, f"{where}: {msg}" if where else msg, code="invalid_value", param=where or None) from None
