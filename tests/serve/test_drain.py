"""Graceful drain of a real `nutq serve` process (tiny checkpoint) on SIGTERM.

While a stream runs, SIGTERM makes /readyz answer 503 and new requests a retryable 503 (HTTP) or
a retryable error message (WebSocket, seed protocol), lets the running stream finish (exactly the
audio it would have had), and the process exits with 0. With a drain timeout shorter than the
stream, the stream is cancelled at the deadline instead.

Both servers start together (their startup is most of this module's time) and each test uses one.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from http.client import IncompleteRead

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
ws_connect = pytest.importorskip("websockets.sync.client").connect

from tests.serve.helpers import connect, get_json, http_request  # noqa: E402

TEXT = "مرحبا بكم"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """One `nutq serve` subprocess; its JSON log lines are read back from a file."""

    def __init__(self, checkpoint, log_path, drain_timeout: float, extra: tuple[str, ...] = ()):
        self.port, self.log_path = free_port(), log_path
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "nutq.cli", "serve", "--model-dir", str(checkpoint), "--port", str(self.port),
               "--max-sessions", "2", "--drain-timeout", str(drain_timeout), "--log-format", "json", *extra]
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"nutq serve exited early:\n{self.log_text()}"
            try:
                if get_json(self.url, "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"not ready within {timeout} s:\n{self.log_text()}"
            time.sleep(0.1)

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def messages(self) -> list[str]:
        return [json.loads(line)["msg"] for line in self.log_text().splitlines() if line.startswith("{")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture(scope="module")
def servers(tiny_checkpoint, tmp_path_factory):
    logs = tmp_path_factory.mktemp("drain-logs")
    both = {"patient": Served(tiny_checkpoint, logs / "patient.log", drain_timeout=60),
            "hasty": Served(tiny_checkpoint, logs / "hasty.log", drain_timeout=0.5)}
    try:
        for s in both.values():
            s.wait_ready()
        yield both
    finally:
        for s in both.values():
            s.stop()


def speech_body(tokens: int, seed: int) -> dict:
    return {"model": "nutq", "input": TEXT, "voice": "default", "response_format": "pcm", "seed": seed,
            "max_tokens": tokens}


def start_stream(url: str, tokens: int, seed: int = 7):
    """An OpenAI pcm stream whose first audio has arrived: (connection, response, first bytes)."""
    conn = connect(url)
    conn.request("POST", "/v1/audio/speech", json.dumps(speech_body(tokens, seed)),
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    assert r.status == 200
    first = r.read1(1 << 20)
    assert first, "no audio before the drain started"
    return conn, r, first


def read_rest(r) -> bytes:
    try:
        return r.read()
    except IncompleteRead as e:
        return e.partial


def refused_while_draining(url: str) -> None:
    status, body = get_json(url, "/readyz")
    assert status == 503 and body["error"]["code"] == "draining"
    status, head, raw = http_request(url, "POST", "/v1/audio/speech", json.dumps(speech_body(2, seed=0)),
                                     {"Content-Type": "application/json"})
    err = json.loads(raw)["error"]
    assert status == 503 and err["code"] == "draining" and "retry-after" in head
    with ws_connect(url.replace("http", "ws") + "/ws/tts", open_timeout=10) as ws:
        ws.send(json.dumps({"text": TEXT, "max_tokens": 2}))
        reply = json.loads(ws.recv(timeout=10))
    assert reply["status"] == "error" and reply["error"]["code"] == "draining" and reply["error"]["retryable"]


def test_sigterm_lets_running_streams_finish_and_refuses_new_ones(servers):
    s = servers["patient"]
    tokens = 50
    status, _, reference = http_request(s.url, "POST", "/v1/audio/speech", json.dumps(speech_body(tokens, seed=7)),
                                        {"Content-Type": "application/json"})
    assert status == 200 and len(reference) > 4 * 1920, "the reference stream is too short to drain during"

    conn, r, first = start_stream(s.url, tokens)
    s.proc.send_signal(signal.SIGTERM)
    refused_while_draining(s.url)
    drained = first + read_rest(r)
    conn.close()
    assert s.proc.wait(timeout=30) == 0, s.log_text()
    assert drained == reference, "the stream running at SIGTERM did not finish with its full audio"
    msgs = s.messages()
    assert any(m.startswith("drained: no streams running") for m in msgs), msgs
    assert not any("cancelled" in m for m in msgs), msgs


def test_streams_still_running_at_the_drain_deadline_are_cancelled(servers):
    s = servers["hasty"]
    conn, r, first = start_stream(s.url, tokens=800)
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    refused_while_draining(s.url)
    audio = first + read_rest(r)
    conn.close()
    assert s.proc.wait(timeout=30) == 0, s.log_text()
    took = time.monotonic() - t0
    # 0.5 s of drain, then cancel (one decode step) and uvicorn's shutdown; the stream alone takes ~15 s
    assert took < 8, f"the process took {took:.1f} s to exit after SIGTERM"
    assert len(audio) < 800 * 1920
    assert any("drain deadline reached: cancelled 1 running streams" in m for m in s.messages()), s.log_text()
