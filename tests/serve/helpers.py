"""Shared tools of the server tests: a real uvicorn server on a loopback socket, plain HTTP calls."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from contextlib import contextmanager
from urllib.parse import urlsplit

__all__ = ["running_server", "connect", "get_json", "http_request", "wait_released"]


@contextmanager
def running_server(app, *, ready_path: str = "/readyz", timeout: float = 60.0, sndbuf: int | None = None,
                   **uvicorn_kw):
    """Serve `app` from a thread on 127.0.0.1:<free port>; yields the base URL once `ready_path`
    answers 200 (warmup done), and stops the server on exit. `sndbuf`: the kernel send buffer of
    the server's connections (Linux: accepted sockets inherit it from the listener), so that a
    client that stops reading blocks the server's sends after kilobytes instead of megabytes."""
    import uvicorn

    sock = socket.socket()
    if sndbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **uvicorn_kw))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                if get_json(url, ready_path)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"server did not become ready within {timeout} s"
            time.sleep(0.05)
        yield url
    finally:
        srv.should_exit = True
        thread.join(timeout=30)
        sock.close()


def connect(url: str) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(urlsplit(url).netloc, timeout=60)


def http_request(url: str, method: str, path: str, body: bytes | str | None = None,
                 headers: dict | None = None) -> tuple[int, dict, bytes]:
    """(status, headers (lower-case names), body) of one request."""
    conn = connect(url)
    try:
        conn.request(method, path, body, headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def get_json(url: str, path: str, headers: dict | None = None) -> tuple[int, dict]:
    status, _, body = http_request(url, "GET", path, headers=headers)
    return status, json.loads(body)


def wait_released(app, timeout: float = 10.0) -> None:
    """Until every stream of `app` has let go of its admission, its KV slot and its live entry
    (the previous test's streams wind down asynchronously); fails after `timeout` seconds."""
    ctx = app.state.ctx
    deadline = time.monotonic() + timeout
    while ctx.limiter.active or ctx.engine.pool.in_use or ctx.live:
        assert time.monotonic() < deadline, "a stream's admission, KV slot or live entry was not given back"
        time.sleep(0.01)
