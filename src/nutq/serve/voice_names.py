"""Which voice a request's voice name speaks with, on the endpoints stock clients call.

Stock clients always send a voice of their vendor's: LiveKit's OpenAI plugin `ash`, Pipecat's
`OpenAITTSService` `alloy` (and it refuses names outside OpenAI's list before sending anything),
the Deepgram plugins an `aura-…` model. So on the OpenAI and Deepgram endpoints a name resolves as:

1. an alias from `ServeConfig.voice_aliases` (`nutq serve --voice-alias alloy=narrator`): its voice;
2. a registered voice id (or `default`): that voice;
3. one of the vendor's stock names (OpenAI's voice list on `/v1/audio/speech`, Deepgram's
   `aura[-N]-<name>-<lang>` on `/v1/speak`): the default voice;
4. anything else: `UnknownVoiceError` (404).

The native and seed protocols are nutq's own and take voice ids only.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping

from ..engine.voice_cache import DEFAULT_VOICE_ID, UnknownVoiceError, check_voice_id

__all__ = ["OPENAI_VOICES", "check_aliases", "is_stock_name", "parse_aliases", "resolve_voice"]

# OpenAI's built-in voices (the `voice` values its SDK and API document).
OPENAI_VOICES = frozenset({"alloy", "ash", "ballad", "cedar", "coral", "echo", "fable", "marin", "nova", "onyx",
                           "sage", "shimmer", "verse"})
_AURA_NAME = re.compile(r"aura(-\d+)?-[a-z]+-[a-z]{2}")  # Deepgram's voice names


def is_stock_name(name: str, protocol: str) -> bool:
    """True for a voice name of the vendor whose API `protocol` imitates."""
    if protocol == "openai":
        return name.lower() in OPENAI_VOICES
    if protocol == "deepgram":
        return bool(_AURA_NAME.fullmatch(name))
    return False


def parse_aliases(items: Iterable[str]) -> dict[str, str]:
    """`["alloy=narrator", ...]` (the `--voice-alias` values) -> {"alloy": "narrator", ...}."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, voice = item.partition("=")
        name, voice = name.strip(), voice.strip()
        if not sep or not name or not voice:
            raise ValueError(f"--voice-alias takes NAME=VOICE (e.g. alloy=narrator), got {item!r}")
        if name in out and out[name] != voice:
            raise ValueError(f"--voice-alias {name} given twice ({out[name]} and {voice})")
        out[name] = voice
    return out


def check_aliases(aliases: Mapping[str, str], known_voices: Iterable[str]) -> None:
    """ValueError naming the first alias that is not a valid id or points at no known voice."""
    known = set(known_voices)
    for name, voice in aliases.items():
        check_voice_id(name)
        if voice not in known:
            raise ValueError(f"voice alias {name}={voice}: there is no voice {voice!r} "
                             f"(known: {', '.join(sorted(known)) or 'none'})")


async def resolve_voice(ctx, name: str | None, protocol: str) -> str:
    """The voice id that `name` speaks with on `protocol` (see the module docstring); the voice is
    loaded (and cached) here, so the stream that follows reuses it."""
    name = name or DEFAULT_VOICE_ID
    alias = ctx.config.voice_aliases.get(name)
    if alias is not None:
        try:
            await asyncio.to_thread(ctx.engine.voices.get, alias)
        except UnknownVoiceError:
            raise UnknownVoiceError(f"voice {name!r} is an alias of voice {alias!r}, which no longer exists; "
                                    f"register it again or restart without --voice-alias {name}={alias}") from None
        return alias
    try:
        await asyncio.to_thread(ctx.engine.voices.get, name)
        return name
    except UnknownVoiceError:
        if not is_stock_name(name, protocol):
            raise
    await asyncio.to_thread(ctx.engine.voices.get, DEFAULT_VOICE_ID)  # a checkpoint may have none: 404 then
    return DEFAULT_VOICE_ID
