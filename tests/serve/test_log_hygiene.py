"""What reaches the logs of a real `nutq serve` process (issue 15, points 9 and 10): no WebSocket
query string (uvicorn's own access line for WebSockets logs it, with the keys clients put there),
and no forged lines from control characters in a request's path.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
ws_connect = pytest.importorskip("websockets.sync.client").connect

from tests.serve.helpers import http_request  # noqa: E402
from tests.serve.test_drain import Served  # noqa: E402

KEY = "hygiene-key-1234"
FORGED = "2026-01-01 00:00:00,000 INFO nutq.access [-] GET /forged 200"


@pytest.fixture(scope="module")
def served(tiny_checkpoint, tmp_path_factory):
    s = Served(tiny_checkpoint, tmp_path_factory.mktemp("hygiene") / "serve.log", drain_timeout=1,
               extra=("--log-format", "text", "--api-key", KEY, "--no-warmup"))
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def test_no_websocket_query_string_reaches_the_log(served):
    url = served.url.replace("http://", "ws://") + f"/v1/tts/ws?api_key={KEY}&token={KEY}"
    with ws_connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}, proxy=None, open_timeout=30):
        pass
    assert http_request(served.url, "GET", "/healthz")[0] == 200  # a request after it: its lines are out
    log = served.log_text()
    assert "WS /v1/tts/ws 101" in log, log
    assert KEY not in log and "api_key" not in log and "token=" not in log, log


def test_control_characters_in_a_path_cannot_forge_a_line(served):
    path = "/x%0A" + FORGED.replace(" ", "%20") + "%0D%0A"
    assert http_request(served.url, "GET", path)[0] == 404
    assert http_request(served.url, "GET", "/healthz")[0] == 200
    lines = served.log_text().splitlines()
    assert not any(line.startswith(FORGED) for line in lines), lines
    assert any("\\x0a" + FORGED in line for line in lines), lines
