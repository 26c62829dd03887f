"""A real `redis-server` (Debian's package) for the tests: on loopback, on a free port, no disk."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from contextlib import contextmanager

import pytest

__all__ = ["redis_server", "redis_url"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server():
    """Yields `redis://127.0.0.1:<port>/0` of a fresh server, stopped (by its own pid) on exit.
    Skips when redis-server or the redis client is missing (`.ci/run` installs both)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (Debian package redis-server; .ci/run installs it)")
    redis = pytest.importorskip("redis", reason="the redis client is not installed (pip install 'nutq[redis]')")
    port = _free_port()
    proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--protected-mode", "yes"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, "redis-server exited at startup"
                assert time.monotonic() < deadline, "redis-server did not answer within 20 s"
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def redis_url():
    """A fresh redis-server per test module (import this fixture into the module)."""
    with redis_server() as url:
        yield url
