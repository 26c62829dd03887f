"""Reconnection of the Python client, against a scripted WebSocket server on loopback: which close
codes are retried, what is sent again on the new connection, and that text given while the
connection was down is not lost. (A real drain ends the server process; scripting the server makes
the replayed messages exact.)"""

from __future__ import annotations

import asyncio

import pytest

nutq_client = pytest.importorskip("nutq_client")
from websockets.asyncio.server import serve  # noqa: E402

from nutq_client import Audio, ConnectionLost, Done, Resumed, Timestamps  # noqa: E402
from tests.clients.scripted import LATE, TEXT1, TEXT2, Scripted  # noqa: E402


async def scenario(how: str, reconnect: bool = True):
    script = Scripted(how)
    async with serve(script.handler, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        client = nutq_client.Client(f"ws://127.0.0.1:{port}", reconnect=reconnect, backoff_s=0.05, voice="v1")
        async with client:
            ctx = client.context("t", seed=5)
            await ctx.send_text(TEXT1)
            await ctx.send_text(TEXT2)
            await script.got_text.wait()
            await asyncio.sleep(0.05)
            events = []
            try:
                await ctx.send_text(LATE)  # while the connection goes down
                await ctx.close()
            except ConnectionLost as e:  # not reconnecting: the send says why
                events.append(e)
            try:
                async for e in ctx:
                    events.append(e)
            except ConnectionLost as e:
                events.append(e)
            return script.connections, events, client.reconnects


@pytest.mark.parametrize("how", ["1013", "1012", "draining"])
def test_retryable_close_reconnects_and_resends_only_unspoken_text(how):
    connections, events, reconnects = asyncio.run(asyncio.wait_for(scenario(how), 30))
    assert reconnects == 1 and len(connections) == 2
    replay = connections[1]
    # connection defaults first, then the context's own config, then the text not confirmed spoken
    assert replay[0] == {"type": "config", "voice": "v1"}
    assert replay[1] == {"type": "config", "context_id": "t", "seed": 5}
    resent = "".join(m["text"] for m in replay if m["type"] == "text")
    assert resent == (TEXT1 + TEXT2 + LATE)[5:]  # after "مرحبا", the word whose audio had arrived
    assert replay[-1] == {"type": "close_context", "context_id": "t"}
    kinds = [type(e) for e in events]
    assert Resumed in kinds and kinds[-1] is Done and events[-1].reason == "closed"
    resumed = next(e for e in events if isinstance(e, Resumed))
    assert (resumed.char_offset, resumed.attempt) == (5, 1)
    assert [type(e) for e in events[:2]] == [Audio, Timestamps]  # what came before the drop is kept


def test_non_retryable_close_ends_open_contexts_with_a_typed_error():
    connections, events, reconnects = asyncio.run(asyncio.wait_for(scenario("1008"), 30))
    assert reconnects == 0 and len(connections) == 1
    assert isinstance(events[0], ConnectionLost) and events[-1] is events[0]  # the send and the iterator
    err = events[-1]
    assert isinstance(err, ConnectionLost) and err.close_code == 1008 and not err.retryable


def test_reconnect_off_reports_the_retryable_close():
    connections, events, reconnects = asyncio.run(asyncio.wait_for(scenario("1013", reconnect=False), 30))
    assert reconnects == 0 and isinstance(events[-1], ConnectionLost) and events[-1].retryable


def test_a_server_that_keeps_dropping_is_given_up_on_after_max_retries():
    connections = []

    async def drop(ws):
        connections.append(ws)
        await ws.recv()
        await ws.close(1013)

    async def main():
        async with serve(drop, "127.0.0.1", 0) as srv:
            port = srv.sockets[0].getsockname()[1]
            async with nutq_client.Client(f"ws://127.0.0.1:{port}", max_retries=3, backoff_s=0.01) as client:
                ctx = client.context()
                await ctx.send_text("مرحبا.")
                with pytest.raises(ConnectionLost) as lost:
                    async for _ in ctx:
                        pass
                return lost.value, client.reconnects

    lost, reconnects = asyncio.run(asyncio.wait_for(main(), 30))
    assert len(connections) == 4 and reconnects == 3  # the first connection and three retries
    assert lost.close_code == 1013 and lost.retryable
