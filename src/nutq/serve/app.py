"""`create_app(tts, config)`: the FastAPI application. All state lives on the app it returns
(`app.state.ctx`, a `ServerContext`).

    /healthz   liveness: the process answers (never needs a key)
    /readyz    readiness: 200 once the model is loaded and warmed up and not draining, else 503
    /v1/audio/speech   OpenAI-compatible synthesis (see `openai_api`)
    /v1/tts/ws         native multi-context WebSocket (see `native_ws`, docs/protocols/native.md)
    /v1/speak          Deepgram-compatible synthesis, REST and WebSocket (see `deepgram_api`)
    /ws/tts, /tts/stream, /latency   the seed's simple protocol (see `seed_api`)
    /v1/voices         list, upload and delete voices (see `voices_api`)
    /metrics           Prometheus metrics (needs a key only with ServeConfig.metrics_public off)

Every request gets an `X-Request-ID` and one access log line (see `logs`); every request body is
authenticated and bounded before it is read (see `body_limits`).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Response
from starlette.requests import HTTPConnection

from ..engine.engine import Engine
from ..engine.request import SynthesisRequest
from ..engine.sampling import SamplingParams
from ..tts import TTS
from .auth import Authenticator
from .body_limits import BodyGuard, BodyLimit
from .config import ServeConfig
from .context import ServerContext
from .errors import ApiError, install_error_handlers
from .logs import RequestLogMiddleware
from .metrics import CONTENT_TYPE
from .native_ws import native_router
from .deepgram_api import deepgram_router, error_response as deepgram_error
from .openai_api import openai_router
from .seed_api import seed_router
from .voices_api import UPLOAD_OVERHEAD_BYTES, voices_router

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_WARMUP_TEXT = "مرحبا بكم."


async def _warm_up(ctx: ServerContext, synthesize: bool) -> None:
    """The engine's scheduler built in a worker thread (KV pool, CUDA graph capture: seconds on a
    GPU), so that the loop keeps serving meanwhile and no request pays for it; then, if
    `synthesize`, one short synthesis that runs every model once."""
    engine, state = ctx.engine, ctx.readiness
    try:
        await asyncio.to_thread(engine.start)
    except Exception as e:  # noqa: BLE001 - reported on /readyz instead of crashing the server
        log.exception("engine start failed")
        state.reason = f"warmup failed: {e}"
        return
    if synthesize and engine.default_voice is None:
        log.info("no built-in voice in this checkpoint: skipping warmup synthesis")
    elif synthesize:
        params = SamplingParams(max_new_tokens=ctx.config.warmup_tokens)
        stream = await asyncio.to_thread(engine.stream, SynthesisRequest(_WARMUP_TEXT, language="ar", params=params,
                                                                         seed=0))
        try:
            await asyncio.to_thread(lambda: sum(1 for _ in stream))
        except Exception as e:  # noqa: BLE001 - reported on /readyz instead of crashing the server
            log.exception("warmup failed")
            state.reason = f"warmup failed: {e}"
            return
        finally:
            stream.close()
    state.ready, state.reason = True, "ready"


def create_app(engine: Engine | TTS, config: ServeConfig = ServeConfig()) -> FastAPI:
    """An app serving `engine` (a loaded `Engine`, or the `TTS` facade over one) under `config`."""
    ctx = ServerContext(engine.engine if isinstance(engine, TTS) else engine, config)
    auth = Authenticator(config.api_keys)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        task = asyncio.create_task(_warm_up(ctx, config.warmup))
        yield
        await task  # a few tokens: finishing is quicker than tearing down mid-step

    app = FastAPI(title="nutq", summary="Real-time Arabic text-to-speech", lifespan=lifespan)
    app.state.ctx = ctx
    app.state.auth = auth
    install_error_handlers(app, ctx.metrics)
    upload = BodyLimit(config.max_upload_bytes + UPLOAD_OVERHEAD_BYTES, "upload_too_large", "file", what="upload",
                       named_limit=config.max_upload_bytes)
    json_body = BodyLimit(config.max_body_bytes)

    def refusal(scope, err: ApiError) -> Response:
        if scope["path"] == "/v1/speak":
            return deepgram_error(err, HTTPConnection(scope))
        return err.response()

    app.add_middleware(BodyGuard, auth=auth, limit_for=lambda path: upload if path == "/v1/voices" else json_body,
                       respond=refusal, metrics=ctx.metrics)
    app.add_middleware(RequestLogMiddleware)  # added last: outermost, so it logs the guard's refusals too

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict:
        if ctx.draining:
            raise ApiError(503, "draining", code="draining")
        if not ctx.readiness.ready:
            raise ApiError(503, ctx.readiness.reason, code="not_ready")
        return {"status": "ready"}

    app.include_router(openai_router(ctx), dependencies=[Depends(auth.dependency())])
    app.include_router(voices_router(ctx), dependencies=[Depends(auth.dependency())])
    # these authenticate inside their endpoints: their 401s have their own protocols' shapes
    app.include_router(deepgram_router(ctx))
    app.include_router(seed_router(ctx))
    app.include_router(native_router(ctx))

    @app.get("/metrics", dependencies=[] if config.metrics_public else [Depends(auth.dependency())])
    async def metrics() -> Response:
        return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)
    return app
