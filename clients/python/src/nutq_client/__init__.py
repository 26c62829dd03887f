"""nutq_client: a client of the nutq TTS server that needs neither torch nor the server package.

    import asyncio, nutq_client

    async def main():
        async with nutq_client.Client("ws://127.0.0.1:8000", voice="default") as client:
            ctx = client.context()
            for piece in ["مرحبا ", "بكم. ", "كيف حالك؟"]:
                await ctx.send_text(piece)
            await ctx.close()
            speech = await ctx.collect()        # or: async for event in ctx

Blocking code: `nutq_client.sync`. HTTP (OpenAI endpoint, voices): `AsyncHttp`, `Http`.
"""

from .client import SETTINGS, Client, Context, speak
from .errors import RETRYABLE_CLOSE_CODES, ConnectionLost, NutqError
from .events import Audio, Done, Flushed, Resumed, Speech, Timestamps, Timings, Word
from .http import AsyncHttp, Http
from . import sync

__version__ = "0.1.0"

__all__ = ["Client", "Context", "speak", "SETTINGS", "NutqError", "ConnectionLost", "RETRYABLE_CLOSE_CODES", "Audio",
           "Done", "Flushed", "Resumed", "Speech", "Timestamps", "Timings", "Word", "AsyncHttp", "Http", "sync"]
