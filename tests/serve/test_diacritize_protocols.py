"""`diacritize` is one shared field (`serve.extensions.SynthesisExtensions`, plus OpenAI's and the
native protocol's own sets) and reaches the engine on every protocol. Without the `tashkeel`
extra installed the engine refuses it, and each protocol says so in its own error shape; that
refusal is the proof the option arrived (a dropped option would speak undiacritized audio)."""

from __future__ import annotations

import importlib.util
import json
from urllib.parse import urlencode

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("websockets")
if importlib.util.find_spec("text2tashkeel") is not None:
    pytest.skip("text2tashkeel is installed: diacritize would succeed (tests/test_tts_diacritize.py covers it)",
                allow_module_level=True)

from websockets.sync.client import connect as ws_connect  # noqa: E402

from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import http_request, running_server  # noqa: E402

TEXT = "مرحبا بكم"


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    tts = TTS.from_local(tiny_checkpoint, max_sessions=1)
    with running_server(create_app(tts, ServeConfig(warmup=False))) as url:
        yield url
    tts.close()


def test_openai(server):
    body = json.dumps({"model": "nutq", "input": TEXT, "voice": "default", "diacritize": True, "max_tokens": 4})
    status, _, raw = http_request(server, "POST", "/v1/audio/speech", body, {"Content-Type": "application/json"})
    assert status == 400 and json.loads(raw)["error"]["param"] == "diacritize"


def test_seed(server):
    status, _, raw = http_request(server, "GET", "/tts/stream?" + urlencode(
        {"text": TEXT, "diacritize": "true", "max_tokens": 4}))
    assert status == 400 and json.loads(raw)["error"]["param"] == "diacritize"


def test_deepgram(server):
    status, _, raw = http_request(server, "POST", "/v1/speak?diacritize=true&max_tokens=4", json.dumps({"text": TEXT}),
                                  {"Content-Type": "application/json"})
    assert status == 400 and json.loads(raw)["err_code"] == "UNSUPPORTED_OPTION"


def test_native(server):
    with ws_connect(server.replace("http", "ws") + "/v1/tts/ws") as ws:
        for m in ({"type": "config", "context_id": "a", "diacritize": True, "max_tokens": 4},
                  {"type": "text", "context_id": "a", "text": TEXT}, {"type": "flush", "context_id": "a"}):
            ws.send(json.dumps(m))
        while True:
            msg = ws.recv(timeout=60)
            if isinstance(msg, str) and json.loads(msg)["type"] == "error":
                assert json.loads(msg)["code"] == "unsupported_option"
                break
