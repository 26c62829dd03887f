"""`benchmarks/load_ws.py` at test scale: 4 concurrent `/ws/tts` streams on a server with 4 KV slots.

Every stream completes, each carries exactly the audio its request gives alone (own sentence and
seed: any mixing or loss shows), and afterwards every session, admission and live stream is
released. The benchmark adds the server-RSS check at 16 streams (RSS of this test process is too
noisy to assert on).
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("websockets")

from benchmarks.load_ws import check_round, request, run_concurrent, speak  # noqa: E402
from nutq.serve.app import create_app  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.tts import TTS  # noqa: E402

from tests.serve.helpers import running_server  # noqa: E402

STREAMS = 4
TOKENS = 12


def test_concurrent_streams_complete_unmixed_and_release_everything(tiny_checkpoint):
    tts = TTS.from_local(tiny_checkpoint, max_sessions=STREAMS)
    app = create_app(tts, ServeConfig(max_streams_per_key=STREAMS))
    ctx = app.state.ctx
    reqs = [request(i, TOKENS) for i in range(STREAMS)]
    with running_server(app) as url:
        ws_url = url.replace("http", "ws") + "/ws/tts"
        alone = [speak(ws_url, r, timeout=60) for r in reqs]
        assert not [r.error for r in alone if r.error]
        refs = [r.audio for r in alone]
        assert all(refs) and len(set(refs)) == STREAMS, "requests must differ for mixing to be detectable"

        results = run_concurrent(ws_url, reqs, timeout=60)
        assert check_round(results, refs) == []
        assert all(r.ttfa_ms is not None and r.server_latency_ms is not None for r in results)
    tts.close()
    assert tts.pool.in_use == 0, "a KV slot is still leased after every stream completed"
    assert not ctx.live and ctx.limiter.active == 0, "a stream's admission was not given back"


def test_64_streams_on_16_slots_all_complete_through_the_scheduler(tiny_checkpoint):
    """The scheduler's loopback acceptance check: 64 streams at once, 16 decoding and 16 queued at a time, the
    rest refused with a retryable error and retried, as a client would, until all are done."""
    tts = TTS.from_local(tiny_checkpoint, max_sessions=16, max_queue=16)
    app = create_app(tts, ServeConfig(max_streams_per_key=64))
    reqs = [request(i, 4) for i in range(64)]
    with running_server(app) as url:
        ws_url = url.replace("http", "ws") + "/ws/tts"
        todo, rounds = list(range(64)), 0
        while todo and rounds < 10:
            results = run_concurrent(ws_url, [reqs[i] for i in todo], timeout=120)
            busy = [i for i, r in zip(todo, results) if r.error and "busy" in r.error]
            assert [r.error for r in results if r.error and "busy" not in r.error] == []
            assert all(r.audio for i, r in zip(todo, results) if i not in busy)
            todo, rounds = busy, rounds + 1
        assert not todo, f"{len(todo)} streams still refused after {rounds} rounds"
        stats = tts.scheduler_stats()
        assert stats.admitted >= 64 and stats.mean_batch > 1, stats
    tts.close()
    assert tts.pool.in_use == 0 and not app.state.ctx.live
