"""A scripted native-protocol server for the reconnect tests of both clients (Python and browser):
it drops the first connection after the first word was spoken, in the way each test asks."""

from __future__ import annotations

import asyncio
import json

TEXT1, TEXT2, LATE = "مرحبا بكم. ", "كيف حالك", "؟ شكرا."
DONE = {"type": "done", "context_id": "t", "reason": "closed",
        "timings": {"first_audio_latency_s": 0.1, "rtf": 0.5, "audio_s": 0.5, "phrases": 1}}


class Scripted:
    """Connection 1: speaks the first word (audio, then its timestamp), then ends as `how` says.
    Connection 2 and later: records messages; answers `close_context` with audio and `done`."""

    def __init__(self, how: str):
        self.how, self.connections, self.got_text = how, [], asyncio.Event()

    async def handler(self, ws):
        seen: list[dict] = []
        self.connections.append(seen)
        first = len(self.connections) == 1
        async for raw in ws:
            msg = json.loads(raw)
            seen.append(msg)
            if first and msg["type"] == "text" and msg["text"] == TEXT2:
                await ws.send(b"\x01t" + b"\x00\x00" * 12_000)  # 0.5 s of audio: the first word's
                await ws.send(json.dumps({"type": "timestamps", "context_id": "t", "words": [
                    {"word": "مرحبا", "start": 0.0, "end": 0.4, "char_start": 0, "char_end": 5}]}))
                self.got_text.set()
                if self.how == "draining":
                    await ws.send(json.dumps({"type": "error", "code": "draining", "message": "shutting down",
                                              "retryable": True, "context_id": "t"}))
                    await ws.send(json.dumps({**DONE, "reason": "error"}))
                    await asyncio.sleep(0.3)  # the text given meanwhile is recorded, not lost
                    await ws.close(1012)
                else:
                    await ws.close(int(self.how))
                return
            if not first and msg["type"] == "close_context":
                await ws.send(b"\x01t" + b"\x00\x00" * 100)
                await ws.send(json.dumps(DONE))
