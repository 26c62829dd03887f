"""Request bodies (issue 15, point 3), over raw loopback sockets: a request with a body is
authenticated before any of it is read, a declared Content-Length over the limit is refused
before reading, and a chunked body is cut off at the limit. Each refusal arrives while the client
has sent only the head (or only part of the body): the server did not wait for the rest.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import http_request, running_server  # noqa: E402
from tests.serve.raw_clients import read_response_head, send_request_head, stalled_socket  # noqa: E402

KEY = "body-key"
MAX_BODY = 4096
MAX_UPLOAD = 64 * 1024
HUGE = 200 << 20  # declared, never sent
PATHS = ["/v1/audio/speech", "/v1/speak", "/v1/voices"]
JSON_HEAD = {"Content-Type": "application/json"}
UPLOAD_HEAD = {"Content-Type": "multipart/form-data; boundary=xyz"}


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    tts = TTS.from_local(tiny_checkpoint, max_sessions=1)
    app = create_app(tts, ServeConfig(api_keys=(KEY,), warmup=False, max_body_bytes=MAX_BODY,
                                      max_upload_bytes=MAX_UPLOAD))
    with running_server(app) as url:
        yield app, url


def answer(sock) -> tuple[int, dict, dict]:
    """(status, headers, JSON body) of the response to a request whose body was never finished."""
    status, headers, rest = read_response_head(sock)
    body = rest
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(4096)
    return status, headers, json.loads(body)


def error_code(path: str, body: dict) -> str:
    return body["err_code"] if path == "/v1/speak" else body["error"]["code"]


def head_for(path: str) -> dict:
    return UPLOAD_HEAD if path == "/v1/voices" else JSON_HEAD


@pytest.mark.parametrize("path", PATHS)
def test_a_body_without_a_valid_key_is_refused_before_it_is_read(server, path):
    _, url = server
    with stalled_socket(url) as sock:
        send_request_head(sock, "POST", path, {**head_for(path), "Authorization": "Bearer wrong",
                                               "Content-Length": str(HUGE)})
        status, headers, body = answer(sock)
    assert status == 401 and headers.get("connection") == "close"
    assert error_code(path, body) == ("INVALID_AUTH" if path == "/v1/speak" else "invalid_api_key")


@pytest.mark.parametrize("path", PATHS)
def test_a_declared_length_over_the_limit_is_refused_before_it_is_read(server, path):
    app, url = server
    before = app.state.ctx.metrics.registry.get_sample_value("nutq_errors_total", {
        "code": "upload_too_large" if path == "/v1/voices" else "body_too_large"}) or 0
    with stalled_socket(url) as sock:
        send_request_head(sock, "POST", path, {**head_for(path), "Authorization": f"Bearer {KEY}",
                                               "Content-Length": str(HUGE)})
        status, headers, body = answer(sock)
    assert status == 413 and headers.get("connection") == "close"
    want = {"/v1/speak": "BODY_TOO_LARGE", "/v1/voices": "upload_too_large"}.get(path, "body_too_large")
    assert error_code(path, body) == want
    code = "upload_too_large" if path == "/v1/voices" else "body_too_large"
    assert app.state.ctx.metrics.registry.get_sample_value("nutq_errors_total", {"code": code}) == before + 1


@pytest.mark.parametrize("path", PATHS)
def test_a_chunked_body_is_cut_off_at_the_limit(server, path):
    _, url = server
    limit = MAX_UPLOAD + 16 * 1024 if path == "/v1/voices" else MAX_BODY
    piece = b"x" * 1024
    with stalled_socket(url) as sock:
        send_request_head(sock, "POST", path, {**head_for(path), "Authorization": f"Bearer {KEY}",
                                               "Transfer-Encoding": "chunked"})
        if path == "/v1/voices":  # a well-formed start, so that it is the size that is refused
            part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
            sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        # one piece past the limit, and never the terminating chunk
        for _ in range(limit // len(piece) + 1):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        status, _, body = answer(sock)
    assert status == 413, body


def test_a_body_within_the_limit_is_served(server):
    _, url = server
    body = json.dumps({"model": "nutq", "input": "مرحبا", "voice": "default", "response_format": "pcm",
                       "max_tokens": 4})
    status, _, audio = http_request(url, "POST", "/v1/audio/speech", body,
                                    {**JSON_HEAD, "Authorization": f"Bearer {KEY}"})
    assert status == 200 and audio
