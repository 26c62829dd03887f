"""The Python client (clients/python, `nutq_client`) against a live `nutq serve` on loopback."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import numpy as np
import pytest

nutq_client = pytest.importorskip("nutq_client")
from nutq_client import Audio, Done, Flushed, NutqError, Timestamps  # noqa: E402

RATE = 24_000
FAST = {"max_tokens": 25, "seed": 3}  # about a second per phrase: tiny-model random speech is long


def run(coro, timeout: float = 120.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def server_samples(done: Done) -> int:
    return round(done.timings.audio_s * RATE)  # the server counts audio_s from its samples sent


def test_imports_without_torch_or_the_server_package():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['nutq'] = None\n"
            "import nutq_client, nutq_client.sync, nutq_client.http\n"
            "assert not any(m.split('.')[0] in ('torch', 'nutq') for m in sys.modules if sys.modules[m])\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_contexts_stream_incremental_text_with_timestamps_and_exact_sample_counts(server):
    pieces = ["مرحبا ", "بكم", ". كيف ", "حالك؟"]
    text = "".join(pieces)

    async def one(client, cid):
        ctx = client.context(cid, **FAST)
        for p in pieces:
            await ctx.send_text(p)
        await ctx.flush()
        await ctx.close()
        events = [e async for e in ctx]
        return events

    async def main():
        async with nutq_client.Client(server.ws, output_format="pcm_s16le") as client:
            return await asyncio.gather(one(client, "a"), one(client, "b"))  # two contexts, one socket

    for events in run(main()):
        done = events[-1]
        assert isinstance(done, Done) and done.reason == "closed"
        audio = [e for e in events if isinstance(e, Audio)]
        assert audio and sum(e.samples for e in audio) == server_samples(done)
        assert sum(len(e.data) for e in audio) == 2 * server_samples(done)
        assert sum(1 for e in events if isinstance(e, Flushed)) == 1
        words = [w for e in events if isinstance(e, Timestamps) for w in e.words]
        assert words and all(text[w.char_start:w.char_end] == w.word for w in words)
        assert [w.start for w in words] == sorted(w.start for w in words)
        pcm = np.concatenate([e.numpy() for e in audio])
        assert pcm.dtype == np.float32 and pcm.size == server_samples(done)


def test_cancel_ends_the_context_and_drops_queued_audio(server):
    async def main():
        async with nutq_client.Client(server.ws) as client:
            ctx = client.context(max_tokens=200, seed=1)
            await ctx.send_text("مرحبا بكم في نطق. كيف حالك اليوم؟ أنا بخير.")
            await ctx.flush()
            first = await ctx.__anext__()
            assert isinstance(first, Audio)
            await asyncio.sleep(0.3)  # more chunks queue up unread
            await ctx.cancel()
            rest = [e async for e in ctx]
            # the id is free again at once: a new context with it speaks normally
            again = client.context(ctx.id, **FAST)
            await again.send_text("نعم.")
            await again.close()
            return rest, await again.collect()

    rest, again = run(main())
    assert [type(e) for e in rest] == [Done] and rest[0].reason == "cancelled"
    assert again.audio and again.timings is not None


def test_server_errors_are_typed(server):
    async def main():
        async with nutq_client.Client(server.ws) as client:
            ctx = client.context(voice="no-such-voice")
            await ctx.send_text("مرحبا.")
            with pytest.raises(NutqError) as bad_voice:
                async for _ in ctx:
                    pass
            fmt = client.context(output_format="ogg_vorbis")
            await fmt.send_text("مرحبا.")
            with pytest.raises(NutqError) as bad_format:
                await fmt.__anext__()
            closed = client.context(**FAST)
            await closed.send_text("نعم.")
            await closed.close()
            with pytest.raises(NutqError) as after_close:
                await closed.send_text("لا")
            return bad_voice.value, bad_format.value, after_close.value

    bad_voice, bad_format, after_close = run(main())
    assert (bad_voice.code, bad_voice.retryable, bad_voice.param) == ("voice_not_found", False, "voice")
    assert bad_format.code == "unsupported_format" and bad_format.context_id is not None
    assert after_close.code == "context_closed"
    with pytest.raises(ValueError, match="unknown setting"):
        nutq_client.Client(server.ws, voise="default")
    with pytest.raises(ValueError, match="context_id"):
        nutq_client.Client(server.ws).context("not valid!")


def test_connect_failure_is_typed():
    with pytest.raises(NutqError) as e:
        run(nutq_client.Client("ws://127.0.0.1:9", max_retries=1, backoff_s=0.01).connect())
    assert e.value.code == "connect_failed" and e.value.retryable


def test_sync_speak_and_http_helpers(server, tmp_path):
    speech = nutq_client.sync.speak("مرحبا بكم.", server.url, **FAST)
    assert len(speech.audio) == 2 * server_samples(Done("", "closed", speech.timings))
    assert speech.words and speech.numpy().size == len(speech.audio) // 2

    with nutq_client.sync.Client(server.ws, **FAST) as client:
        ctx = client.context()
        ctx.send_text("نعم.")
        ctx.close()
        kinds = [type(e).__name__ for e in ctx]
    assert kinds[-1] == "Done" and "Audio" in kinds

    with nutq_client.Http(server.url) as http:
        body = b"".join(http.stream_speech("مرحبا بكم.", response_format="pcm", **FAST))
        assert len(body) > 0 and len(body) % 2 == 0
        assert http.list_voices()[0]["id"] == "default"
        made = http.upload_voice(tone_wav(), voice_id="tone")
        assert made["id"] == "tone" and "tone" in [v["id"] for v in http.list_voices()]
        http.delete_voice("tone")
        with pytest.raises(NutqError) as gone:
            http.delete_voice("tone")
        assert gone.value.status == 404 and not gone.value.retryable

    async def aio():
        async with nutq_client.AsyncHttp(server.url) as http:
            chunks = [c async for c in http.stream_speech("نعم.", response_format="pcm", **FAST)]
            with pytest.raises(NutqError) as bad:
                async for _ in http.stream_speech("نعم.", voice="nobody"):
                    pass
            return chunks, bad.value

    chunks, bad = run(aio())
    assert chunks and bad.status == 404 and bad.code == "voice_not_found"


def test_llm_example_streams_an_async_iterator(server, tmp_path):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[2] / "clients" / "python" / "examples"))
    try:
        import llm_to_speech
    finally:
        sys.path.pop(0)

    async def few():
        for piece in ["نعم", "، ", "شكرا."]:
            yield piece

    out = io.BytesIO()
    timings = run(llm_to_speech.speak_stream(server.ws, few(), out, **FAST))
    assert timings is not None and len(out.getvalue()) == 2 * round(timings.audio_s * RATE)


def tone_wav(seconds: float = 2.0, sr: int = 24_000) -> bytes:
    import soundfile as sf

    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    x = 0.2 * (x / np.abs(x).max() + 0.01 * np.random.default_rng(0).standard_normal(t.size))
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format="WAV")
    return buf.getvalue()
