"""Admission limits, the message-rate bucket, client identity and the shared stream context."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("fastapi")

from starlette.requests import HTTPConnection  # noqa: E402

from nutq.engine.sampling import SamplingParams  # noqa: E402
from nutq.serve.auth import Authenticator  # noqa: E402
from nutq.serve.config import ServeConfig  # noqa: E402
from nutq.serve.context import ServerContext, StreamOptions  # noqa: E402
from nutq.serve.errors import ApiError, ws_close_code  # noqa: E402
from nutq.serve.limits import StreamLimiter, TokenBucket  # noqa: E402
from nutq.tts import TTS  # noqa: E402


def test_limiter_counts_per_client_and_in_total():
    lim = StreamLimiter(total=3, per_client=2, retry_after_s=4)
    a1, a2 = lim.acquire("a"), lim.acquire("a")
    with pytest.raises(ApiError) as e:
        lim.acquire("a")
    assert e.value.status == 429 and e.value.code == "too_many_streams" and e.value.headers["Retry-After"] == "4"
    b1 = lim.acquire("b")
    with pytest.raises(ApiError) as e:
        lim.acquire("c")
    assert e.value.code == "server_busy" and e.value.retryable
    a1.release()
    a1.release()  # idempotent: a second release must not free someone else's place
    assert lim.active == 2
    lim.acquire("c")
    with pytest.raises(ApiError):
        lim.acquire("d")
    a2.release(), b1.release()
    assert lim.active == 1


def test_token_bucket_allows_bursts_then_the_sustained_rate():
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.1  # one token's worth of time
    assert bucket.take() and not bucket.take()
    now[0] += 100  # refills only up to the burst
    assert sum(bucket.take() for _ in range(10)) == 3


def _conn(headers: dict[str, str], host: str = "10.0.0.1") -> HTTPConnection:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return HTTPConnection({"type": "http", "headers": raw, "client": (host, 1234)})


def test_client_identity_hashes_the_key_and_never_holds_it():
    auth = Authenticator(("s3cret", "other"))
    ids = {auth.identify(_conn({"Authorization": "Bearer s3cret"})),
           auth.identify(_conn({"Authorization": "token s3cret"})),
           auth.identify(_conn({"xi-api-key": "s3cret"}))}
    assert len(ids) == 1 and "s3cret" not in next(iter(ids))
    assert auth.identify(_conn({"xi-api-key": "other"})) not in ids
    for bad in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic s3cret"}):
        with pytest.raises(ApiError) as e:
            auth.identify(_conn(bad))
        assert e.value.status == 401 and ws_close_code(e.value) == 1008
    assert Authenticator(()).identify(_conn({}, host="1.2.3.4")) == "addr:1.2.3.4"


def test_ws_close_codes_tell_clients_whether_to_retry():
    assert ws_close_code(ApiError(429, "busy")) == 1013
    assert ws_close_code(ApiError(503, "draining")) == 1013
    assert ws_close_code(ApiError(500, "bug")) == 1011
    assert ws_close_code(ApiError(400, "bad")) == 1003


@pytest.fixture(scope="module")
def tts(tiny_checkpoint):
    return TTS.from_local(tiny_checkpoint, max_sessions=2)


def test_open_stream_admits_speaks_and_gives_everything_back(tts):
    ctx = ServerContext(tts, ServeConfig(max_streams_per_key=1, max_new_tokens=50))
    opts = StreamOptions("مرحبا بكم", params=SamplingParams(max_new_tokens=12, ignore_eos=True), seed=1)

    async def main():
        live = await ctx.open_stream(opts, client="a", protocol="test")
        with pytest.raises(ApiError) as e:  # one stream per client
            await ctx.open_stream(opts, client="a", protocol="test")
        assert e.value.code == "too_many_streams"
        chunks = [c async for c in live]
        spoken = live.stream.sessions[0].tokens  # valid speech tokens (random weights also emit invalid ids)
        assert chunks[-1].is_final and sum(len(c.audio) for c in chunks) == len(spoken) * 960 > 0
        again = await ctx.open_stream(opts, client="a", protocol="test")  # the first one let go
        again.cancel()
        await again.aclose()

    asyncio.run(main())
    assert ctx.limiter.active == 0 and not ctx.live and tts.pool.in_use == 0
    text = ctx.metrics.render().decode()
    assert 'nutq_streams_total{outcome="completed",protocol="test"} 1.0' in text
    assert 'nutq_streams_total{outcome="cancelled",protocol="test"} 1.0' in text
    assert 'nutq_errors_total{code="too_many_streams"} 1.0' in text
    assert 'nutq_time_to_first_audio_seconds_count{protocol="test"} 2.0' in text


def test_open_stream_errors_leave_nothing_held(tts):
    ctx = ServerContext(tts, ServeConfig(max_input_chars=20, max_new_tokens=50))

    async def attempt(**kw):
        base = dict(text="مرحبا", params=SamplingParams(max_new_tokens=4))
        with pytest.raises(ApiError) as e:
            await ctx.open_stream(StreamOptions(**{**base, **kw}), client="a", protocol="test")
        return e.value

    async def main():
        assert (await attempt(voice="nobody")).status == 404
        assert (await attempt(text="x" * 21)).code == "input_too_long"
        assert (await attempt(params=SamplingParams(max_new_tokens=51))).status == 400
        assert (await attempt(text="...")).status == 400  # nothing to say
        ctx.draining = True
        err = await attempt()
        assert err.status == 503 and err.retryable and err.headers["Retry-After"]

    asyncio.run(main())
    assert ctx.limiter.active == 0 and not ctx.live and tts.pool.in_use == 0
