"""A real `nutq serve` process (tiny checkpoint, meanflow decoder for speed) on 127.0.0.1, started
and stopped by the client tests (the `server` fixture in this directory's conftest, the drain test)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serve.helpers import get_json


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str  # http://127.0.0.1:PORT
    proc: subprocess.Popen
    log: Path

    @property
    def ws(self) -> str:
        return self.url.replace("http://", "ws://")

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(checkpoint: Path, log: Path, *extra: str, port: int | None = None, timeout: float = 120.0) -> Served:
    port = port or free_port()
    cmd = [sys.executable, "-m", "nutq.cli", "serve", "--model-dir", str(checkpoint), "--host", "127.0.0.1",
           "--port", str(port), "--flow", "meanflow", "--max-sessions", "4",
           "--voice-store", str(log.parent / "voices"), *extra]
    out = open(log, "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    served = Served(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail(f"nutq serve exited early:\n{served.log_text()}")
        try:
            if get_json(served.url, "/readyz")[0] == 200:
                return served
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"nutq serve not ready within {timeout} s:\n{served.log_text()}")
        time.sleep(0.1)


def stop_server(served: Served) -> None:
    if served.proc.poll() is None:
        served.proc.terminate()
        try:
            served.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            served.proc.wait()
