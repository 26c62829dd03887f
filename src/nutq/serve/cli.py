"""`nutq serve`: load a checkpoint and run the HTTP/WebSocket server (needs the `serve` extra).

The server drains on SIGTERM/SIGINT (see `serve.drain`) and logs one line per request in text or
JSON (see `serve.logs`).
"""

from __future__ import annotations

import os

from ..cli_args import (add_dtype_argument, add_flow_arguments, add_speculative_arguments, flow_from_args,
                        speculative_from_args)
from ..engine.config import CPU_SESSIONS, DEFAULT_QUEUE
from .config import ServeConfig  # a plain dataclass: cheap enough for `nutq --help`

_DEFAULTS = ServeConfig()  # one source for the defaults shown and used


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the streaming TTS server (OpenAI-compatible /v1/audio/speech)")
    p.add_argument("--model-dir", help="checkpoint directory (also $NUTQ_MODEL_DIR); default: download")
    p.add_argument("--revision", help="model repository revision when downloading")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-sessions", type=int, default=None,
                   help=f"streams decoded at once (KV slots; default: {CPU_SESSIONS} on CPU, sized from free GPU "
                        "memory on CUDA)")
    p.add_argument("--max-queue", type=int, default=DEFAULT_QUEUE,
                   help="streams that may wait for a slot beyond those; more get a retryable 429")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    add_dtype_argument(p)
    add_flow_arguments(p)
    add_speculative_arguments(p)
    p.add_argument("--voice-store", help="where registered voices persist: a directory (this server's own), or "
                                         "redis://host:6379/0 to share them between replicas (needs nutq[redis])")
    p.add_argument("--api-key", action="append", default=[],
                   help="require this key (repeatable; also $NUTQ_API_KEYS, comma-separated)")
    p.add_argument("--max-input-chars", type=int, default=_DEFAULTS.max_input_chars)
    p.add_argument("--language", default=_DEFAULTS.default_language,
                   help="default language of requests that name none")
    p.add_argument("--no-warmup", action="store_true", help="report ready without a warmup synthesis")
    p.add_argument("--max-streams-per-key", type=int, default=_DEFAULTS.max_streams_per_key,
                   help="concurrent streams per API key (per client address without keys); default: half of "
                        "all streams, so one client cannot take every slot")
    p.add_argument("--idle-timeout", type=float, default=_DEFAULTS.idle_timeout_s, metavar="SECONDS",
                   help="close a WebSocket with no message and nothing being spoken for this long")
    p.add_argument("--drain-timeout", type=float, default=_DEFAULTS.drain_timeout_s, metavar="SECONDS",
                   help="on SIGTERM, how long running streams may finish before they are cancelled")
    p.add_argument("--ws-max-size", type=int, default=_DEFAULTS.max_frame_bytes, metavar="BYTES",
                   help="largest WebSocket message accepted (larger: an error message, then close 1009)")
    p.add_argument("--private-metrics", action="store_true",
                   help="require an API key for /metrics too (default: /metrics is open)")
    p.add_argument("--log-format", choices=["text", "json"], default="text",
                   help="json: one JSON object per line (ts, level, logger, msg, request_id, ...)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--voice-alias", action="append", default=[], metavar="NAME=VOICE",
                   help="speak voice name NAME (e.g. OpenAI's alloy, Deepgram's aura-2-thalia-en) with voice VOICE "
                        "(repeatable); unaliased OpenAI and Deepgram voice names use the default voice")
    p.add_argument("--max-new-tokens", type=int, default=_DEFAULTS.max_new_tokens, metavar="N",
                   help="speech tokens per phrase at most (25 per second of audio); requests may ask for fewer "
                        "(max_tokens), never more. Bounds how long one request runs, e.g. under a client's timeout")
    p.add_argument("--no-demo", action="store_true", help="do not serve the browser demo page at / (clients/js)")
    _add_abuse_limits(p)
    p.set_defaults(func=_serve)


def _add_abuse_limits(p) -> None:
    """Limits that bound what one misbehaving client can cost (see ServeConfig)."""
    p.add_argument("--send-timeout", type=float, default=_DEFAULTS.send_timeout_s, metavar="SECONDS",
                   help="cancel a stream whose client accepts no bytes for this long (it stopped reading)")
    p.add_argument("--stream-buffer-chunks", type=int, default=_DEFAULTS.stream_buffer_chunks, metavar="N",
                   help="audio chunks generated ahead of a slow client before its generation waits")
    p.add_argument("--max-body-bytes", type=int, default=_DEFAULTS.max_body_bytes, metavar="BYTES",
                   help="largest JSON request body (larger: 413, before it is read)")
    p.add_argument("--max-voices", type=int, default=_DEFAULTS.max_voices, help="registered voices in total")
    p.add_argument("--max-voices-per-key", type=int, default=_DEFAULTS.max_voices_per_key,
                   help="registered voices per API key (per client address without keys)")
    p.add_argument("--max-concurrent-uploads", type=int, default=_DEFAULTS.max_concurrent_uploads, metavar="N",
                   help="voice uploads read and decoded at once (more: 429)")


def _abuse_limits(args) -> dict:
    return dict(send_timeout_s=args.send_timeout, stream_buffer_chunks=args.stream_buffer_chunks,
                max_body_bytes=args.max_body_bytes, max_voices=args.max_voices,
                max_voices_per_key=args.max_voices_per_key, max_concurrent_uploads=args.max_concurrent_uploads)


def _serve(args) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ValueError("nutq serve needs the server packages: pip install 'nutq[serve]'") from None

    from .drain import SHUTDOWN_GRACE_S, DrainingServer

    app, engine, config = build(args)
    # ws_max_size twice the app's limit: a message a little over the limit gets the protocol's
    # in-band `message_too_large` error before the close; uvicorn still bounds what it buffers.
    # log_config=None: uvicorn's records go through the handler configured above; access_log off:
    # the app logs its own access lines, with request ids and client ids.
    server = DrainingServer(uvicorn.Config(app, host=args.host, port=args.port, ws_max_size=2 * config.max_frame_bytes,
                                           log_config=None, log_level=args.log_level, access_log=False,
                                           timeout_graceful_shutdown=SHUTDOWN_GRACE_S), app.state.ctx)
    try:
        server.run()
    finally:
        engine.close()
    return 0


def build(args):
    """(app, engine, config) from parsed `nutq serve` arguments, logging configured: what `nutq serve`
    runs under uvicorn, and a Ray Serve replica (`serve.ray_app`) under Ray's proxy."""
    from ..checkpoints.files import resolve
    from ..engine.config import EngineConfig
    from ..engine.engine import Engine
    from .app import create_app
    from .logs import configure_logging
    from .voice_names import parse_aliases

    engine_config = EngineConfig(device=args.device, dtype=args.dtype, flow_dtype=args.flow_dtype,
                                 flow=flow_from_args(args), max_sessions=args.max_sessions, max_queue=args.max_queue,
                                 voice_store=args.voice_store,
                                 **speculative_from_args(args))  # checked before anything loads
    env_keys = [k.strip() for k in os.environ.get("NUTQ_API_KEYS", "").split(",") if k.strip()]
    config = ServeConfig(api_keys=tuple(args.api_key + env_keys), max_input_chars=args.max_input_chars,
                         default_language=args.language, warmup=not args.no_warmup,
                         max_streams_per_key=args.max_streams_per_key, idle_timeout_s=args.idle_timeout,
                         drain_timeout_s=args.drain_timeout, max_frame_bytes=args.ws_max_size,
                         metrics_public=not args.private_metrics, max_new_tokens=args.max_new_tokens,
                         voice_aliases=parse_aliases(args.voice_alias), **_abuse_limits(args))
    configure_logging(args.log_format, args.log_level.upper())
    files = resolve(args.model_dir, revision=args.revision, flow=engine_config.flow.kind,
                    meanflow_revision=args.meanflow_revision)
    engine = Engine(files, engine_config)
    app = create_app(engine, config)
    if not args.no_demo:
        from .demo import install_demo
        install_demo(app)
    return app, engine, config
