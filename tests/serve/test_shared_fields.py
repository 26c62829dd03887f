"""One synthesis field set for every protocol (`serve.synthesis_fields.SynthesisFields`), and one
request per synthesis: each shared field, and the output format, reach the engine's
`SynthesisRequest` on OpenAI, the seed protocol (HTTP and WebSocket), Deepgram (REST and
WebSocket) and the native WebSocket.

The engine's `stream` is wrapped to record the request it is given; a stand-in diacritizer (a
fatha after every letter) takes the `tashkeel` extra's place, so diacritized requests speak."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("websockets")

from websockets.sync.client import connect as ws_connect  # noqa: E402

from nutq.engine.output import OutputFormat  # noqa: E402
from nutq.engine.request import SynthesisRequest  # noqa: E402
from nutq.errors import ClientError  # noqa: E402
from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.serve.deepgram_api import SpeakQuery  # noqa: E402
from nutq.serve.native_protocol import ConfigMessage, SpeakSettings  # noqa: E402
from nutq.serve.openai_api import SpeechRequest  # noqa: E402
from nutq.serve.seed_api import SeedRequest  # noqa: E402
from nutq.serve.synthesis_fields import SynthesisFields  # noqa: E402
from nutq.text.frontend import TextFrontend  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import http_request, running_server  # noqa: E402
from tests.test_tts_diacritize import fatha_everywhere  # noqa: E402

TEXT = "مرحبا بكم"
PROTOCOL_MODELS = (SpeechRequest, SeedRequest, SpeakQuery, SpeakSettings, ConfigMessage)

# Each shared field: a value none of the defaults has, and where the engine's request holds it.
SENT = {
    "seed": (123, lambda r: r.seed),
    "max_tokens": (7, lambda r: r.params.max_new_tokens),
    "temperature": (0.6, lambda r: r.params.temperature),
    "cfg_weight": (0.3, lambda r: r.params.cfg_weight),
    "exaggeration": (0.9, lambda r: r.exaggeration),
    "normalize": (False, lambda r: r.normalize),
    "diacritize": (True, lambda r: r.diacritize),
}


def test_the_table_covers_every_shared_field():
    # a field added to the shared set must be added here, and so be proven to reach the engine
    assert set(SENT) == set(SynthesisFields.model_fields)


@pytest.mark.parametrize("model", PROTOCOL_MODELS, ids=lambda m: m.__name__)
def test_every_protocol_takes_the_shared_fields_without_a_copy(model):
    assert issubclass(model, SynthesisFields)
    for name, shared in SynthesisFields.model_fields.items():
        field = model.model_fields[name]
        assert (field.annotation, field.default, field.metadata) == (shared.annotation, shared.default,
                                                                     shared.metadata), name
    # No protocol class re-declares a shared field (a copy that would drift from the shared one),
    # and its fields are the shared ones plus its own: a field added to the shared set is on it.
    own: set[str] = set()
    for cls in model.__mro__:
        if cls is not SynthesisFields and issubclass(cls, SynthesisFields):
            declared = set(cls.__dict__.get("__annotations__", {})) - {"model_config"}
            assert not declared & set(SynthesisFields.model_fields), cls
            own |= declared
    assert set(model.model_fields) == set(SynthesisFields.model_fields) | own


def test_the_request_checks_its_output_format():
    assert SynthesisRequest("x").output == OutputFormat()  # what the engine makes: float32 at 24 kHz
    with pytest.raises(ClientError, match="sample rate 44100 is not supported for opus"):
        OutputFormat("opus", "ogg", 44100)
    with pytest.raises(ClientError, match="cannot go in container"):
        OutputFormat("mp3", "wav", 24000)
    with pytest.raises(ClientError, match="output must be an OutputFormat"):
        SynthesisRequest("x", output="mp3")


@pytest.fixture(scope="module")
def served(tiny_checkpoint):
    tts = TTS.from_local(tiny_checkpoint, max_sessions=2)
    engine = tts.engine
    engine.planner._frontend = TextFrontend(_diacritizer=fatha_everywhere)
    seen: list[SynthesisRequest] = []
    real = engine.stream

    def recording(request, *a, **kw):
        seen.append(request)
        return real(request, *a, **kw)

    engine.stream = recording
    app = create_app(tts, ServeConfig(warmup=False, max_new_tokens=50))
    with running_server(app) as url:
        yield url, seen, app
    tts.close()


def _last(seen: list, before: int) -> SynthesisRequest:
    assert len(seen) > before, "no synthesis reached the engine"
    return seen[-1]


def _check(request: SynthesisRequest, output: OutputFormat) -> None:
    for name, (value, read) in SENT.items():
        assert read(request) == value, name
    assert request.output == output


def _query() -> dict:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, (v, _) in SENT.items()}


def test_openai(served):
    url, seen, _ = served
    n = len(seen)
    body = {"model": "nutq", "input": TEXT, "voice": "default", "response_format": "wav", "sample_rate": 16000,
            **{k: v for k, (v, _) in SENT.items()}}
    status, headers, _ = http_request(url, "POST", "/v1/audio/speech", json.dumps(body),
                                      {"Content-Type": "application/json"})
    assert status == 200
    _check(_last(seen, n), OutputFormat("pcm_s16le", "wav", 16000))


def test_seed_http_and_ws(served):
    url, seen, _ = served
    n = len(seen)
    status, _, _ = http_request(url, "GET", "/tts/stream?" + urlencode({"text": TEXT, **_query()}))
    assert status == 200
    _check(_last(seen, n), OutputFormat("pcm_s16le", "raw", 24000))
    n = len(seen)
    with ws_connect(url.replace("http", "ws") + "/ws/tts") as ws:
        ws.send(json.dumps({"text": TEXT, **{k: v for k, (v, _) in SENT.items()}}))
        while not (isinstance(msg := ws.recv(timeout=60), str) and json.loads(msg).get("status")):
            pass
        assert json.loads(msg)["status"] == "complete", msg
    _check(_last(seen, n), OutputFormat("pcm_s16le", "raw", 24000))


def test_deepgram_rest_and_ws(served):
    url, seen, _ = served
    n = len(seen)
    q = urlencode({"encoding": "mulaw", "container": "none", **_query()})
    status, _, _ = http_request(url, "POST", "/v1/speak?" + q, json.dumps({"text": TEXT}),
                                {"Content-Type": "application/json"})
    assert status == 200
    _check(_last(seen, n), OutputFormat("mulaw", "raw", 8000))
    n = len(seen)
    with ws_connect(url.replace("http", "ws") + "/v1/speak?" + urlencode({"sample_rate": 16000, **_query()})) as ws:
        for m in ({"type": "Speak", "text": TEXT}, {"type": "Flush"}):
            ws.send(json.dumps(m))
        while not (isinstance(msg := ws.recv(timeout=60), str) and json.loads(msg)["type"] == "Flushed"):
            pass
    _check(_last(seen, n), OutputFormat("pcm_s16le", "raw", 16000))


def test_native(served):
    url, seen, _ = served
    n = len(seen)
    with ws_connect(url.replace("http", "ws") + "/v1/tts/ws") as ws:
        config = {"type": "config", "context_id": "a", "output_format": "opus", "sample_rate": 48000,
                  **{k: v for k, (v, _) in SENT.items()}}
        for m in (config, {"type": "text", "context_id": "a", "text": TEXT},
                  {"type": "close_context", "context_id": "a"}):
            ws.send(json.dumps(m))
        while not (isinstance(msg := ws.recv(timeout=60), str) and json.loads(msg)["type"] == "done"):
            assert not (isinstance(msg, str) and json.loads(msg)["type"] == "error"), msg
    _check(_last(seen, n), OutputFormat("opus", "ogg", 48000))


def test_every_handler_told_the_end_of_its_streams(served):
    """After the protocols above spoke (sockets closed, bodies read), no stream waits for its handler
    to send a last message: a drain would otherwise wait for them until its deadline."""
    _, seen, app = served
    assert seen
    deadline = time.monotonic() + 10
    while app.state.ctx.telling and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not app.state.ctx.telling


def test_a_native_phrase_is_told_while_its_context_stays_open(served):
    """An idle open context must not hold a drain: its spoken phrase's stream is told at its end."""
    url, _, app = served
    with ws_connect(url.replace("http", "ws") + "/v1/tts/ws") as ws:
        for m in ({"type": "text", "context_id": "idle", "text": TEXT}, {"type": "flush", "context_id": "idle"}):
            ws.send(json.dumps(m))
        while not (isinstance(msg := ws.recv(timeout=60), str) and json.loads(msg)["type"] == "flushed"):
            pass
        deadline = time.monotonic() + 10
        while app.state.ctx.telling and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not app.state.ctx.telling  # the context is still open here
