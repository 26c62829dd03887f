"""The test oracle for streams: the same phrases and sessions as `TTS.stream`, each phrase spoken
by the plain reference loop (`Session.run()`, alone, in the caller's thread) instead of the
engine's scheduler, which every real stream goes through."""

from __future__ import annotations


def plain_stream(tts, *args, **kw):
    stream = tts.stream(*args, **kw)
    stream._runner = lambda session, continuation, out: session.run()
    return stream
