"""Speak an LLM's answer while it is being generated: each token goes to the server as soon as it
exists, so speech starts at the end of the first phrase, not at the end of the answer.

    python examples/llm_to_speech.py ws://127.0.0.1:8000 out.pcm

`tokens()` stands in for any async iterator of strings (an OpenAI/Anthropic stream's text
deltas, a local model's generate loop): replace it with yours. Audio is raw 16-bit 24 kHz PCM
(play it with `ffplay -f s16le -ar 24000 -ac 1 out.pcm`).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import nutq_client


async def tokens() -> AsyncIterator[str]:
    """A fake LLM: an Arabic answer, a few characters at a time, with a model's pace."""
    answer = "أهلا بك! الطقس اليوم مشمس، ودرجة الحرارة خمس وعشرون درجة. هل تريد أن تعرف المزيد؟"
    for i in range(0, len(answer), 3):
        await asyncio.sleep(0.02)
        yield answer[i:i + 3]


async def speak_stream(url: str, pieces: AsyncIterator[str], out, **settings) -> nutq_client.Timings | None:
    """Speak `pieces` as they come, writing the audio to `out`; `settings`: voice, seed, ..."""
    async with nutq_client.Client(url, **{"output_format": "pcm_s16le", **settings}) as client:
        ctx = client.context()

        async def feed() -> None:
            async for piece in pieces:
                await ctx.send_text(piece)
            await ctx.close()  # speak the tail, then `Done`

        feeder = asyncio.create_task(feed())
        timings = None
        async for event in ctx:  # audio arrives while the text is still coming in
            if isinstance(event, nutq_client.Audio):
                out.write(event.data)
            elif isinstance(event, nutq_client.Done):
                timings = event.timings
        await feeder
        return timings


def main() -> int:
    url = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8000"
    path = sys.argv[2] if len(sys.argv) > 2 else "out.pcm"
    with open(path, "wb") as out:
        timings = asyncio.run(speak_stream(url, tokens(), out))
    print(f"wrote {path}: {timings}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
