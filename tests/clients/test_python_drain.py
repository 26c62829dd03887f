"""The Python client across a real drain: `nutq serve` gets SIGTERM while a context is being spoken,
finishes the running phrase, refuses the next one (`draining`), closes the socket and exits; a new
server comes up on the same port; the client reconnects by itself and the context is finished
there, from the text after the last confirmed word."""

from __future__ import annotations

import asyncio
import signal

import pytest

nutq_client = pytest.importorskip("nutq_client")
from nutq_client import Audio, Done, Resumed, Timestamps  # noqa: E402
from tests.clients.served import free_port, start_server, stop_server  # noqa: E402
from tests.serve.helpers import http_request  # noqa: E402

PHRASES = ["مرحبا بكم. ", "كيف حالك اليوم؟ ", "أنا بخير."]


def test_context_survives_a_server_restart(tiny_checkpoint, tmp_path):
    port = free_port()
    first = start_server(tiny_checkpoint, tmp_path / "first.log", "--drain-timeout", "30", "--no-demo", port=port)
    second = None
    try:
        assert http_request(first.url, "GET", "/")[0] == 404  # --no-demo: no page at /

        async def main():
            nonlocal second
            client = nutq_client.Client(first.ws, max_retries=40, backoff_s=0.2, max_backoff_s=1.0,
                                        max_tokens=25, seed=9)
            async with client:
                ctx = client.context()
                for p in PHRASES:
                    await ctx.send_text(p)
                await ctx.close()
                events = []
                async for e in ctx:
                    events.append(e)
                    if isinstance(e, Audio) and second is None:
                        # the first phrase is being spoken: drain this server, then start another
                        first.proc.send_signal(signal.SIGTERM)
                        await asyncio.to_thread(first.proc.wait, 60)
                        second = await asyncio.to_thread(start_server, tiny_checkpoint, tmp_path / "second.log",
                                                         port=port)
                return events, client.reconnects

        events, reconnects = asyncio.run(asyncio.wait_for(main(), 240))
    finally:
        stop_server(first)
        if second is not None:
            stop_server(second)
    assert first.proc.returncode == 0, first.log_text()
    assert reconnects >= 1
    resumed = [e for e in events if isinstance(e, Resumed)]
    print([type(e).__name__ for e in events], resumed)
    assert resumed, [type(e).__name__ for e in events]
    text = "".join(PHRASES)
    done = events[-1]
    assert isinstance(done, Done) and done.reason == "closed"
    words = [w for e in events if isinstance(e, Timestamps) for w in e.words]
    # every word of the text is spoken, none lost across the restart (a word may come twice: the
    # part of a phrase that was cut off is said again)
    assert {w.word for w in words} == set(text.split())
    assert all(text[w.char_start:w.char_end] == w.word for w in words)
    assert 0 < resumed[0].char_offset < len(text)
