"""How every protocol's validated fields become the engine's request (`synthesis_request`), the
shared field set as compatibility protocols take it (`SynthesisExtensions`), and one way to
validate a protocol's request shape into an `ApiError`.

A client of those protocols that sends none of these fields gets the official sampling defaults,
a random seed and the server's token cap, exactly as before the fields existed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ..engine.output import OutputFormat
from ..engine.request import SynthesisRequest
from ..engine.sampling import SamplingParams
from .errors import ApiError
from .synthesis_fields import SynthesisFields

__all__ = ["SynthesisExtensions", "SynthesisFields", "synthesis_request", "validate"]

M = TypeVar("M", bound=BaseModel)


class SynthesisExtensions(SynthesisFields):
    """The shared fields on protocols that have no words for them (Deepgram's query string, the
    seed's request JSON). Unknown fields are ignored: these protocols have clients that send their
    original service's other options."""

    model_config = ConfigDict(extra="ignore")


def synthesis_request(fields: SynthesisFields, text: str, voice: str, language: str | None, max_new_tokens: int,
                      output: OutputFormat, *, seed_offset: int = 0, segment: bool = True) -> SynthesisRequest:
    """The engine's request from a protocol's validated fields: the one place each shared field is
    carried over. `max_new_tokens`: the server's cap, used when the request sets none (open_stream
    refuses a request above it); `seed_offset` is added to a given seed (the native protocol's
    phrase i speaks with seed + i)."""
    params = SamplingParams(max_new_tokens=fields.max_tokens or max_new_tokens)
    if fields.temperature is not None:
        params = replace(params, temperature=fields.temperature)
    if fields.cfg_weight is not None:
        params = replace(params, cfg_weight=fields.cfg_weight)
    seed = None if fields.seed is None else fields.seed + seed_offset
    return SynthesisRequest(text, voice, language, params, seed, fields.exaggeration, fields.normalize,
                            segment=segment, diacritize=fields.diacritize, output=output)


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
