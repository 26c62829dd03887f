"""Every protocol serves the distilled (meanflow) decoder, and `nutq serve --flow meanflow` loads it.

One in-process server with a meanflow TTS (tiny random checkpoint holding a meanflow file): the
OpenAI, Deepgram, seed (HTTP) and native WebSocket endpoints each return exactly what
`TTS(flow="meanflow").stream` gives in-process for the same seed, and not what the 10-step
decoder gives. Then a real `nutq serve --flow meanflow` process answers an OpenAI request with the
same audio, and one pointed at a directory without the meanflow file refuses to start, naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from urllib.parse import urlencode

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
from websockets.sync.client import connect as ws_connect  # noqa: E402

from nutq.engine.sampling import SamplingParams  # noqa: E402
from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.audio_out import to_int16  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.serve.native_protocol import unpack_audio_frame  # noqa: E402
from nutq.tts import TTS  # noqa: E402
from tests.serve.helpers import http_request, running_server  # noqa: E402

TEXT = "مرحبا بكم"
TOKENS = 14
SEED = 4


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint, flow="meanflow", max_sessions=1)


@pytest.fixture(scope="module")
def server(tts):
    with running_server(create_app(tts, ServeConfig(max_new_tokens=400))) as url:
        yield url


def engine_audio(tts, seed: int = SEED) -> np.ndarray:
    chunks = tts.stream(TEXT, tts.voices.get("default"), "ar", params=SamplingParams(max_new_tokens=TOKENS), seed=seed)
    return np.concatenate([c.audio for c in chunks])


@pytest.fixture(scope="module")
def want(tts, tiny_checkpoint) -> bytes:
    pcm = to_int16(engine_audio(tts)).tobytes()
    cfm = TTS.from_local(tiny_checkpoint)
    assert tts.flow.label == "meanflow-2" and cfm.flow.label == "cfm-10"
    assert to_int16(engine_audio(cfm)).tobytes() != pcm, "the two decoders must sound different"
    return pcm


def openai_body() -> bytes:
    return json.dumps({"model": "nutq", "voice": "default", "input": TEXT, "response_format": "pcm",
                       "seed": SEED, "language": "ar", "max_tokens": TOKENS}).encode()


def test_openai_speech(server, want):
    status, _, body = http_request(server, "POST", "/v1/audio/speech", openai_body(),
                                   {"Content-Type": "application/json"})
    assert status == 200, body
    assert body == want


def test_deepgram_speak(server, want):
    q = f"model=default&seed={SEED}&max_tokens={TOKENS}&encoding=linear16&sample_rate=24000&container=none"
    status, _, body = http_request(server, "POST", f"/v1/speak?{q}", json.dumps({"text": TEXT}).encode(),
                                   {"Content-Type": "application/json"})
    assert status == 200, body
    assert body == want


def test_seed_http_stream(server, want):
    q = urlencode({"text": TEXT, "language_id": "ar", "speaker_id": "default", "seed": SEED, "max_tokens": TOKENS})
    status, _, body = http_request(server, "GET", f"/tts/stream?{q}")
    assert status == 200, body
    assert body == want


def test_native_websocket(server, tts, want):
    url = server.replace("http://", "ws://") + "/v1/tts/ws"
    audio = bytearray()
    with ws_connect(url, proxy=None, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "config", "context_id": "a", "output_format": "pcm_s16le", "seed": SEED,
                            "max_tokens": TOKENS}))
        ws.send(json.dumps({"type": "text", "context_id": "a", "text": TEXT}))
        ws.send(json.dumps({"type": "flush", "context_id": "a"}))
        while True:
            m = ws.recv(timeout=120)
            if isinstance(m, bytes):
                audio += unpack_audio_frame(m)[1]
            elif json.loads(m)["type"] in ("flushed", "error"):
                assert json.loads(m)["type"] == "flushed", m
                break
    assert bytes(audio) == want


def test_nutq_serve_flow_meanflow_process(tiny_checkpoint, tmp_path, want):
    from tests.serve.test_drain import Served

    served = Served(tiny_checkpoint, tmp_path / "serve.log", drain_timeout=5, extra=("--flow", "meanflow"))
    try:
        served.wait_ready()
        status, _, body = http_request(served.url, "POST", "/v1/audio/speech", openai_body(),
                                       {"Content-Type": "application/json"})
        assert status == 200, body
        assert body == want, "nutq serve --flow meanflow must speak with the meanflow decoder"
    finally:
        served.stop()


def test_nutq_serve_without_the_meanflow_file_names_it(tiny_checkpoint, tmp_path):
    root = tmp_path / "no-meanflow"
    shutil.copytree(tiny_checkpoint, root)
    (root / "s3gen_meanflow.safetensors").unlink()
    proc = subprocess.run([sys.executable, "-m", "nutq.cli", "serve", "--model-dir", str(root), "--flow", "meanflow"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1
    assert "s3gen_meanflow.safetensors" in proc.stderr and "nutq download --flow meanflow" in proc.stderr
