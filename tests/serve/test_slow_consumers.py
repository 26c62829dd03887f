"""Clients that stop reading (issue 15, point 1), over real loopback sockets with a 1-byte receive
buffer: their streams are cancelled once nothing was accepted for `send_timeout_s`, their slots
go back, and well-behaved clients are served; generation for a stream that is not being read
pauses after `stream_buffer_chunks`; one client cannot take every slot by default.

The server's connections get a small kernel send buffer (`running_server(sndbuf=...)`), so that a
stalled client blocks the server's sends after kilobytes of audio rather than megabytes.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from nutq.engine.sampling import SamplingParams  # noqa: E402
from nutq.engine.stream import AsyncSpeechStream  # noqa: E402
from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import connect, http_request, running_server, wait_released  # noqa: E402
from tests.serve.raw_clients import send_request_head, stalled_socket, ws_handshake, ws_text_frame  # noqa: E402

SLOW, GOOD = "slow-key", "good-key"
SEND_TIMEOUT_S = 1.0
ENDLESS = 1000  # tokens: 40 s of audio per phrase, far more than any buffer holds
LONG = "هذا نص طويل جدا بلا أي علامة ترقيم يستمر ويستمر حتى النهاية البعيدة"
RELEASED_WITHIN_S = 20.0  # the send timeout, plus filling the buffers, on a slow shared CPU


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint, max_sessions=2)


@pytest.fixture(scope="module")
def server(tts):
    app = create_app(tts, ServeConfig(api_keys=(SLOW, GOOD), warmup=False, max_new_tokens=ENDLESS,
                                      max_streams_per_key=2, send_timeout_s=SEND_TIMEOUT_S,
                                      stream_buffer_chunks=2))
    with running_server(app, sndbuf=4096) as url:
        yield app, url


def sample(app, name: str, labels: dict) -> float:
    return app.state.ctx.metrics.registry.get_sample_value(name, labels) or 0


def speech_body(tokens: int, text: str = LONG) -> bytes:
    return json.dumps({"model": "nutq", "input": text, "voice": "default", "response_format": "pcm",
                       "max_tokens": tokens, "seed": 1}).encode()


def served_well(url: str) -> None:
    status, _, audio = http_request(url, "POST", "/v1/audio/speech", speech_body(8, "مرحبا بكم"),
                                    {"Authorization": f"Bearer {GOOD}", "Content-Type": "application/json"})
    assert status == 200 and audio


def stall(app, sock, protocol: str) -> None:
    """Start `protocol`'s stream(s) on `sock` and never read."""
    auth = {"Authorization": f"Bearer {SLOW}"}
    if protocol == "http":
        body = speech_body(ENDLESS)
        send_request_head(sock, "POST", "/v1/audio/speech",
                          {**auth, "Content-Type": "application/json", "Content-Length": str(len(body))})
        sock.sendall(body)
        return
    path = {"native": "/v1/tts/ws", "seed": "/ws/tts", "deepgram": "/v1/speak?encoding=linear16"}[protocol]
    ws_handshake(sock, path, auth)
    if protocol == "native":  # two contexts: both slots
        messages = [m for cid in ("a", "b") for m in (
            {"type": "config", "context_id": cid, "max_tokens": ENDLESS, "audio_mode": "binary"},
            {"type": "text", "context_id": cid, "text": LONG}, {"type": "flush", "context_id": cid})]
    elif protocol == "seed":
        messages = [{"text": LONG, "max_tokens": ENDLESS}]
    else:
        messages = [{"type": "Speak", "text": LONG}, {"type": "Flush"}]
    for m in messages:
        sock.sendall(ws_text_frame(json.dumps(m)))


@pytest.mark.parametrize("protocol,transport,streams", [
    ("http", "http", 1), ("native", "websocket", 2), ("seed", "websocket", 1), ("deepgram", "websocket", 1)])
def test_a_client_that_stops_reading_loses_its_streams_and_slots(server, protocol, transport, streams):
    app, url = server
    ctx = app.state.ctx
    wait_released(app)
    proto = "openai" if protocol == "http" else protocol
    cancelled = sample(app, "nutq_streams_total", {"protocol": proto, "outcome": "cancelled"})
    slow = sample(app, "nutq_slow_consumers_total", {"transport": transport})
    sock = stalled_socket(url)
    try:
        stall(app, sock, protocol)
        deadline = time.monotonic() + 30
        while ctx.limiter.active < streams:  # the streams started
            assert time.monotonic() < deadline, "the stalled client's streams never started"
            time.sleep(0.02)
        # ... and are cancelled while the client is still connected and still not reading
        wait_released(app, timeout=RELEASED_WITHIN_S)
        assert sample(app, "nutq_slow_consumers_total", {"transport": transport}) == slow + 1
        assert sample(app, "nutq_streams_total", {"protocol": proto, "outcome": "cancelled"}) == cancelled + streams
        served_well(url)
    finally:
        sock.close()


def test_one_client_cannot_take_every_slot_by_default(tiny_checkpoint):
    tts = TTS.from_local(tiny_checkpoint, max_sessions=2, max_queue=0)  # 2 admitted: 1 per key by default
    app = create_app(tts, ServeConfig(api_keys=(SLOW, GOOD), warmup=False, max_new_tokens=ENDLESS))
    with running_server(app) as url:
        conn = connect(url)
        try:
            conn.request("POST", "/v1/audio/speech", speech_body(ENDLESS),
                         {"Authorization": f"Bearer {SLOW}", "Content-Type": "application/json"})
            r = conn.getresponse()
            assert r.status == 200 and r.read1(1 << 16)
            # two slots in total: the same key may not take the second, another key may
            status, _, raw = http_request(url, "POST", "/v1/audio/speech", speech_body(4),
                                          {"Authorization": f"Bearer {SLOW}", "Content-Type": "application/json"})
            assert status == 429 and json.loads(raw)["error"]["code"] == "too_many_streams"
            served_well(url)
        finally:
            conn.close()
        wait_released(app)


def test_generation_waits_for_a_consumer_that_does_not_take_its_chunks(tts):
    params = SamplingParams(max_new_tokens=20, ignore_eos=True)
    text = "مرحبا بكم. " * 3  # three phrases
    reference = [c.audio for c in tts.stream(text, params=params, seed=3)]
    assert len(reference) > 6, "too few chunks to show a bound"

    async def run() -> tuple[int, list]:
        stream = AsyncSpeechStream(tts.stream(text, params=params, seed=3), max_ahead=2)
        first = await anext(stream)
        await asyncio.sleep(1.5)  # time for several chunks; the engine may make only 2 + 1 more
        made_while_stalled = sum(t.renders for t in stream.stream.timings)
        rest = [c async for c in stream]
        await stream.aclose()
        return made_while_stalled, [first.audio] + [c.audio for c in rest]

    made, audio = asyncio.run(run())
    assert made <= 1 + 2 + 1, f"{made} chunks made for a consumer that took one"
    assert len(audio) == len(reference) and all(np.array_equal(a, b) for a, b in zip(audio, reference))
    assert tts.pool.in_use == 0


def test_the_scheduler_stops_decoding_a_session_nobody_reads(tiny_checkpoint):
    tts = TTS.from_local(tiny_checkpoint, max_sessions=1)
    tokens = 400  # far more than the few chunks a paused session may have ready

    async def run() -> int:
        stream = AsyncSpeechStream(tts.stream(LONG, params=SamplingParams(max_new_tokens=tokens, ignore_eos=True),
                                              seed=1), max_ahead=1)
        await anext(stream)
        last, still_since = -1, None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # until the engine has drawn nothing new for a second
            drawn = tts.scheduler_stats().tokens
            if drawn != last:
                last, still_since = drawn, time.monotonic()
            elif time.monotonic() - still_since > 1.0:
                break
            await asyncio.sleep(0.05)
        await stream.aclose()
        return last

    try:
        drawn = asyncio.run(run())
    finally:
        tts.close()
    assert drawn < tokens, f"the engine drew all {tokens} tokens for a consumer that took one chunk"
    assert tts.pool.in_use == 0
