"""Voices: list, register from an uploaded reference clip, delete.

    GET    /v1/voices         {"object": "list", "data": [voice, ...], "has_more", "first_id", "last_id"}:
                              the built-in "default" first, then by id; `?limit=` (1-1000, default
                              100) and `?after=<id>` page through them
    POST   /v1/voices         multipart/form-data: `file` (the clip), optional `id` and `exaggeration`
    DELETE /v1/voices/{id}    {"id": ..., "object": "voice", "deleted": true}

A voice is `{"id", "object": "voice", "source": "builtin"|"registered", "created" (unix s or null),
"clip_sha256", "clip_seconds", "exaggeration"}`.

Uploads are multipart (the shape of other speech APIs' voice uploads, and what `curl -F` sends).
The clip must be WAV, FLAC, MP3 or Ogg, at most `ServeConfig.max_upload_bytes`, and between
`min_voice_s` and `max_voice_s` long, within the channel, sample-rate and decoded-size limits (see
`clip_check`). The cheap checks come first: the key (`BodyGuard`), the number of uploads in
progress (429 beyond `max_concurrent_uploads`), the id (409) and the quotas (403
`voice_quota_exceeded` beyond `max_voices` in total or `max_voices_per_key` per client); then the
clip is checked in bounded blocks, and the voice prepared, before anything is stored: a bad clip
gets a 400 saying why and leaves the store as it was, and so does a full disk (507
`insufficient_storage`). Without an `id`
the id is derived from the clip's hash, so uploading the same clip again returns the same voice
(200 instead of 201); an explicit `id` that is already taken is refused with 409 (delete it first).
The built-in "default" cannot be deleted (409). Registered voices persist in the TTS voice store
(`nutq serve --voice-store`) and are there again after a restart.
"""

from __future__ import annotations

import asyncio
import errno
from dataclasses import dataclass

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from ..engine.voice import VoiceError
from ..errors import NutqError
from ..engine.voice_cache import DEFAULT_VOICE_ID, VoiceInfo, check_voice_id
from .body_limits import BodyTooLarge
from .clip_check import check_clip
from .config import ServeConfig
from .context import ServerContext
from .errors import ApiError, api_error_from

__all__ = ["voices_router", "UPLOAD_OVERHEAD_BYTES"]

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_PAGE_DEFAULT, _PAGE_MAX = 100, 1000
# Room for the multipart boundaries and the small form fields around the clip itself.
UPLOAD_OVERHEAD_BYTES = 16 * 1024
_MAX_FIELD_BYTES = 1024


def _too_large(n: int, config: ServeConfig) -> ApiError:
    return ApiError(413, f"upload of {n} bytes exceeds the limit of {config.max_upload_bytes} bytes",
                    code="upload_too_large", param="file")


def _voice_json(v: VoiceInfo) -> dict:
    # `v.source` (a server-side path for voices registered from files) is never shown to clients.
    builtin = v.id == DEFAULT_VOICE_ID
    return {"id": v.id, "object": "voice", "source": "builtin" if builtin else "registered",
            "created": None if v.created is None else int(v.created), "clip_sha256": v.clip_sha256,
            "clip_seconds": None if v.clip_seconds is None else round(v.clip_seconds, 3),
            "exaggeration": v.exaggeration}


class _BodyTooLarge(NutqError, MultiPartException):
    """Raised inside the parser, which then closes the temporary files it made so far."""


async def _body(request: Request):
    """The request body; `BodyGuard` cuts it off at the upload limit (a missing or false
    Content-Length must not let a client fill memory or disk), as a parser error here."""
    try:
        async for piece in request.stream():
            yield piece
    except BodyTooLarge as e:
        raise _BodyTooLarge(e.message) from None


@dataclass(frozen=True)
class _Upload:
    clip: bytes
    voice_id: str | None
    exaggeration: float


async def _read_upload(request: Request, config: ServeConfig) -> _Upload:
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(400, "send the clip as multipart/form-data with a 'file' field", code="invalid_value",
                       param="file")
    parser = MultiPartParser(request.headers, _body(request), max_files=1, max_fields=2,
                             max_part_size=_MAX_FIELD_BYTES)
    try:
        form = await parser.parse()
    except _BodyTooLarge as e:
        raise ApiError(413, str(e), code="upload_too_large", param="file") from None
    except MultiPartException as e:
        raise ApiError(400, f"malformed upload: {e}", code="invalid_value", param="file") from None
    try:
        extra = sorted(set(form.keys()) - {"file", "id", "exaggeration"})
        if extra:
            raise ApiError(400, f"unknown form field(s) {', '.join(extra)}; expected file, id, exaggeration",
                           code="invalid_value", param=extra[0])
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise ApiError(400, "missing the 'file' field holding the clip", code="invalid_value", param="file")
        clip = await file.read()
        if len(clip) > config.max_upload_bytes:
            raise _too_large(len(clip), config)
        voice_id = _text_field(form, "id")
        if voice_id is not None:
            try:
                check_voice_id(voice_id)
            except VoiceError as e:
                raise ApiError(400, str(e), code="invalid_value", param="id") from None
            if voice_id == DEFAULT_VOICE_ID:
                raise ApiError(409, f"the id {DEFAULT_VOICE_ID!r} is the built-in voice", code="voice_exists",
                               param="id")
        raw_ex = _text_field(form, "exaggeration")
        return _Upload(clip, voice_id, 0.5 if raw_ex is None else _exaggeration(raw_ex))
    finally:
        await form.close()


def _text_field(form, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"'{name}' must be a plain form field, not a file", code="invalid_value", param=name)
    return value.strip() or None


def _exaggeration(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 2.0:  # NaN fails too
        raise ApiError(400, f"exaggeration must be a number from 0 to 2, got {raw!r}", code="invalid_value",
                       param="exaggeration")
    return value


def voices_router(ctx: ServerContext) -> APIRouter:
    router = APIRouter()

    def voices():
        return ctx.engine.voices  # made (and its store read) on first use: called from worker threads

    # Registration is check-then-add over the store: one at a time, so two uploads cannot both
    # claim a free id. Uploads are rare; listing and synthesis are not serialized by this.
    changing = asyncio.Lock()

    # Each upload holds its body (up to max_upload_bytes) and a decoder: a few at a time.
    uploads = asyncio.Semaphore(ctx.config.max_concurrent_uploads)

    @router.get("/v1/voices")
    async def list_voices(limit: int = Query(_PAGE_DEFAULT, ge=1, le=_PAGE_MAX), after: str | None = None) -> dict:
        infos = await asyncio.to_thread(lambda: voices().list())
        if after is not None:
            at = next((i for i, v in enumerate(infos) if v.id == after), None)
            if at is None:
                raise ApiError(400, "after: no voice with this id", code="invalid_value", param="after")
            infos = infos[at + 1:]
        page = infos[:limit]
        return {"object": "list", "data": [_voice_json(v) for v in page], "has_more": len(infos) > limit,
                "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None}

    def check_room(known: dict, up: _Upload, owner: str) -> None:
        """409 for a taken id, 403 past a quota."""
        if up.voice_id is not None and up.voice_id in known:
            raise ApiError(409, f"voice id {up.voice_id!r} already exists; delete it first or choose another",
                           code="voice_exists", param="id")
        cfg = ctx.config
        registered = [v for v in known.values() if v.id != DEFAULT_VOICE_ID]
        if len(registered) >= cfg.max_voices:
            raise ApiError(403, f"the server holds its limit of {cfg.max_voices} voices; delete one first",
                           code="voice_quota_exceeded")
        if sum(v.owner == owner for v in registered) >= cfg.max_voices_per_key:
            raise ApiError(403, f"this client has registered its limit of {cfg.max_voices_per_key} voices; "
                                "delete one first", code="voice_quota_exceeded")

    async def known_voices() -> dict:
        return {v.id: v for v in await asyncio.to_thread(lambda: voices().list())}

    @router.post("/v1/voices")
    async def add_voice(request: Request) -> JSONResponse:
        if uploads.locked():
            raise ApiError(429, f"{ctx.config.max_concurrent_uploads} voice uploads are in progress; retry shortly",
                           code="too_many_uploads", headers={"Retry-After": str(ctx.config.retry_after_s)})
        owner = request.state.client
        async with uploads:
            up = await _read_upload(request, ctx.config)
            check_room(await known_voices(), up, owner)  # before any decoding
            await asyncio.to_thread(check_clip, up.clip, ctx.config)
            async with changing:
                known = await known_voices()
                check_room(known, up, owner)
                try:
                    vid = await asyncio.to_thread(lambda: voices().add(up.clip, up.voice_id, up.exaggeration,
                                                                       owner=owner))
                except VoiceError as e:  # decodable but unusable, e.g. silent
                    raise ApiError(400, f"cannot make a voice from this clip: {e}", code="invalid_audio",
                                   param="file") from None
                except OSError as e:
                    if e.errno not in _NO_SPACE:
                        raise
                    raise ApiError(507, "the voice store is full; nothing was stored",
                                   code="insufficient_storage") from None
                info = next(v for v in await asyncio.to_thread(lambda: voices().list()) if v.id == vid)
        return JSONResponse(_voice_json(info), status_code=200 if vid in known else 201)

    @router.delete("/v1/voices/{voice_id}")
    async def delete_voice(voice_id: str) -> dict:
        if voice_id == DEFAULT_VOICE_ID:
            raise ApiError(409, "the built-in default voice cannot be deleted", code="voice_builtin",
                           param="voice_id")
        async with changing:
            try:
                await asyncio.to_thread(lambda: voices().remove(voice_id))
            except Exception as e:  # noqa: BLE001 - unknown id -> 404
                raise api_error_from(e) from e
        return {"id": voice_id, "object": "voice", "deleted": True}

    return router
