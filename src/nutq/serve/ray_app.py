"""nutq on Ray Serve: one engine per replica, nutq's FastAPI app as the ingress (needs `nutq[ray]`).

    serve run deploy/ray/serve.yaml              # the config file: replicas, autoscaling, GPUs
    serve run nutq.serve.ray_app:app_builder serve_args='["--model-dir","/models"]'

Each replica is a whole `nutq serve` without its socket: the same arguments (`serve_args`, parsed
by `nutq serve`'s own parser, so every flag and default means the same), the same app, behind
Ray's HTTP proxy, which streams HTTP bodies and passes WebSockets through. What Ray adds:

* routing and autoscaling on ongoing requests: a streaming HTTP request, or a WebSocket for as long
  as it is open, is one ongoing request; `max_ongoing_requests` defaults to what the replica's
  engine admits (its KV slots plus `--max-queue`, resolved as the engine resolves them: see
  `replica_capacity`), so Ray queues rather than a replica refusing with 429;
* `num_gpus` per replica (`ray_actor_options`): one engine per GPU;
* graceful shutdown: a replica being stopped gets no new requests, and Ray waits
  `graceful_shutdown_timeout_s` (by default `--drain-timeout`) for the running ones; then
  `__del__` cancels what is left, each client told as on a drained `nutq serve` (a cut-off body,
  or the protocol's `server_draining` error), and frees the engine;
* a health check: a replica whose warmup failed is replaced.

Voices: with `--voice-store redis://...` every replica sees the voices registered through any of
them (see `engine.voice_store_redis`). Responses carry `X-Nutq-Replica`, the replica's id, so a
client (or a test) can tell which replica served it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from ray import serve

from .drain import cancel_streams

__all__ = ["NutqReplica", "app_builder", "parse_serve_args"]

log = logging.getLogger(__name__)

REPLICA_HEADER = b"x-nutq-replica"


def parse_serve_args(serve_args: list[str]) -> argparse.Namespace:
    """`nutq serve` arguments, parsed and checked by `nutq serve`'s own parser."""
    from .cli import add_parser

    if not isinstance(serve_args, (list, tuple)) or not all(isinstance(a, str) for a in serve_args):
        raise ValueError(f"serve_args must be a list of strings (nutq serve's arguments), got {serve_args!r}")
    parser = _Parser(prog="nutq")
    add_parser(parser.add_subparsers(parser_class=_Parser))
    return parser.parse_args(["serve", *serve_args])


class _Parser(argparse.ArgumentParser):
    """Raises instead of exiting: a bad argument must fail `serve run` with its message, not end
    a Ray process."""

    def error(self, message: str):
        raise ValueError(f"serve_args: {message}")


class _ReplicaHeader:
    """Adds `X-Nutq-Replica: <id>` to every HTTP response (pure ASGI: streaming bodies pass untouched)."""

    def __init__(self, app, replica: str):
        self.app, self._value = app, replica.encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def tagged(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (REPLICA_HEADER, self._value)]}
            await send(message)

        await self.app(scope, receive, tagged)


@serve.deployment(name="nutq")
@serve.ingress()
class NutqReplica:
    def __init__(self, serve_args: list[str]):
        from .cli import build

        self.args = parse_serve_args(serve_args)
        self.nutq_app, self.engine, self.config = build(self.args)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        self.nutq_app.add_middleware(_ReplicaHeader, replica=self.replica_id)
        log.info("nutq replica %s: %d engine slots", self.replica_id, self.engine.slots)

    def __serve_build_asgi_app__(self):
        return self.nutq_app

    async def check_health(self) -> None:
        """Ray replaces a replica whose check raises: here, one whose warmup failed."""
        readiness = self.nutq_app.state.ctx.readiness
        if not readiness.ready and readiness.reason.startswith("warmup failed"):
            raise RuntimeError(readiness.reason)

    async def __del__(self):
        # Ray has stopped routing here and waited graceful_shutdown_timeout_s for running requests.
        ctx = self.nutq_app.state.ctx
        ctx.draining = True
        n = await cancel_streams(ctx)
        if n:
            log.warning("replica %s stopping: cancelled %d streams still running", self.replica_id, n)
        await asyncio.to_thread(self.engine.close)


def app_builder(args: dict):
    """The application `serve run` builds: `args` = {"serve_args": [...]} (nutq serve's arguments)."""
    unknown = sorted(set(args) - {"serve_args"})
    if unknown:
        raise ValueError(f"unknown application argument(s) {', '.join(unknown)}; expected serve_args")
    serve_args = args.get("serve_args", [])
    ns = parse_serve_args(serve_args)  # fail here, in the driver, before any replica starts
    return NutqReplica.options(max_ongoing_requests=replica_capacity(ns),
                               graceful_shutdown_timeout_s=ns.drain_timeout).bind(list(serve_args))


def replica_capacity(ns: argparse.Namespace) -> int:
    """What one replica's engine will admit (KV slots + its waiting line), resolved here, before
    any replica exists, as the engine will resolve it (`engine.capacity.planned_capacity`): Ray
    routes a replica up to this many ongoing requests and queues the rest itself, so no replica
    answers a 429 that Ray could have avoided. On CUDA the slots come from free GPU memory as seen
    from here: where this process sees no GPU but the replicas will (Ray's `num_gpus`), pass
    `--max-sessions`, or the CPU default is assumed."""
    from ..checkpoints.files import resolve
    from ..engine.capacity import planned_capacity
    from ..errors import NutqError
    from .cli import engine_config_from

    config = engine_config_from(ns)
    resolved = config.resolve()
    if ns.max_sessions is None and ns.device == "auto" and resolved.device == "cpu":
        log.warning("nutq on Ray: no GPU visible to the application builder; each replica is assumed to admit "
                    "the CPU default. For GPU replicas pass --max-sessions (or --device cuda where a GPU is visible)")
    files = None
    if resolved.max_sessions is None:  # sized from GPU memory: the checkpoint's shapes, read without downloading
        try:
            files = resolve(ns.model_dir, revision=ns.revision, allow_download=False, flow=config.flow.kind)
        except (NutqError, OSError):
            log.info("nutq on Ray: checkpoint not available here; sizing the KV pool for the official shapes")
    return planned_capacity(config, files)
