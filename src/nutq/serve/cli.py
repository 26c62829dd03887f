"""`nutq serve`: load a checkpoint and run the HTTP server (needs the `serve` extra)."""

from __future__ import annotations

import os


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="run the streaming TTS server (OpenAI-compatible /v1/audio/speech)")
    p.add_argument("--model-dir", help="checkpoint directory (also $NUTQ_MODEL_DIR); default: download")
    p.add_argument("--revision", help="model repository revision when downloading")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-sessions", type=int, default=4, help="concurrent streams; more get 429")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], help="T3 weights dtype (default: file's)")
    p.add_argument("--voice-store", help="directory where registered voices persist")
    p.add_argument("--api-key", action="append", default=[],
                   help="require this key (repeatable; also $NUTQ_API_KEYS, comma-separated)")
    p.add_argument("--max-input-chars", type=int, default=4096)
    p.add_argument("--language", default="ar", help="default language of requests that name none")
    p.add_argument("--no-warmup", action="store_true", help="report ready without a warmup synthesis")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ValueError("nutq serve needs the server packages: pip install 'nutq[serve]'") from None

    from ..checkpoints.files import resolve
    from ..tts import TTS
    from .app import create_app
    from .config import ServeConfig

    if args.max_sessions < 1:
        raise ValueError(f"--max-sessions must be >= 1, got {args.max_sessions}")
    env_keys = [k.strip() for k in os.environ.get("NUTQ_API_KEYS", "").split(",") if k.strip()]
    config = ServeConfig(api_keys=tuple(args.api_key + env_keys), max_input_chars=args.max_input_chars,
                         default_language=args.language, warmup=not args.no_warmup)
    tts = TTS(resolve(args.model_dir, revision=args.revision), device=args.device, dtype=args.dtype,
              max_sessions=args.max_sessions, voice_store=args.voice_store)
    uvicorn.run(create_app(tts, config), host=args.host, port=args.port)
    return 0
