"""`create_app(tts, config)`: the FastAPI application. All state lives on the app it returns.

    /healthz   liveness: the process answers (never needs a key)
    /readyz    readiness: 200 once the model is loaded and warmed up, else 503 with the reason
    /v1/audio/speech   OpenAI-compatible synthesis (see `openai_api`)
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, FastAPI

from ..engine.sampling import SamplingParams
from .auth import key_checker
from .config import ServeConfig
from .errors import ApiError, install_error_handlers
from .openai_api import openai_router

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_WARMUP_TEXT = "مرحبا بكم."


@dataclass
class _Readiness:
    ready: bool = False
    reason: str = "warming up"


async def _warm_up(tts, config: ServeConfig, state: _Readiness) -> None:
    """One short synthesis: allocates the KV pool and runs every model once."""
    if tts.default_voice is None:
        log.info("no built-in voice in this checkpoint: skipping warmup synthesis")
    else:
        stream = tts.stream(_WARMUP_TEXT, language="ar", params=SamplingParams(max_new_tokens=config.warmup_tokens),
                            seed=0)
        try:
            await asyncio.to_thread(lambda: sum(1 for _ in stream))
        except Exception as e:  # noqa: BLE001 - reported on /readyz instead of crashing the server
            log.exception("warmup failed")
            state.reason = f"warmup failed: {e}"
            return
        finally:
            stream.close()
    state.ready, state.reason = True, "ready"


def create_app(tts, config: ServeConfig = ServeConfig()) -> FastAPI:
    """An app serving `tts` (a loaded `nutq.TTS`) under `config`."""
    state = _Readiness()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if config.warmup:
            task = asyncio.create_task(_warm_up(tts, config, state))
        else:
            state.ready, state.reason = True, "ready"
            task = None
        yield
        if task is not None:
            await task  # a few tokens: finishing is quicker than tearing down mid-step

    app = FastAPI(title="nutq", summary="Real-time Arabic text-to-speech", lifespan=lifespan)
    install_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict:
        if not state.ready:
            raise ApiError(503, state.reason, code="not_ready")
        return {"status": "ready"}

    app.include_router(openai_router(tts, config), dependencies=[Depends(key_checker(config.api_keys))])
    return app
