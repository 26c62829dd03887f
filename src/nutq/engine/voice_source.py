"""Facts the voice cache reads about a reference clip without preparing it: its header's duration
and sample rate (informational, shown in voice listings), and a source file's (size, mtime) so a
voice registered from a path notices when the file changes."""

from __future__ import annotations

import io
import os

__all__ = ["clip_info", "file_sig"]


def clip_info(clip: bytes) -> tuple[float | None, int | None]:
    """(seconds, sample rate) from the clip's header when soundfile can read it; prepare does the checks."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(clip))
        return info.frames / info.samplerate, int(info.samplerate)
    except Exception:  # noqa: BLE001 - informational only; an unreadable clip fails in prepare
        return None, None


def file_sig(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of `path`, None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns
