"""`ServeConfig`: the server's limits and defaults, fixed when the app is made."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.chunk_queue import MAX_UNREAD_CHUNKS


@dataclass(frozen=True)
class ServeConfig:
    """What `create_app` needs besides the model.

    api_keys: when non-empty, every endpoint but /healthz and /readyz requires one of these keys
        (`Authorization: Bearer <key>`, `Authorization: Token <key>` or `xi-api-key: <key>`).
    max_input_chars: longest accepted text per request (OpenAI's own limit is 4096); on a
        WebSocket, the most text one context may hold unspoken.
    max_new_tokens: cap on speech tokens per phrase (25 per second of audio); a request may ask
        for fewer with the `max_tokens` extension field, never more.
    default_language: used when a request names none.
    warmup: synthesize a few tokens at startup so the first request does not pay for lazy
        allocations; /readyz answers 503 until it is done.
    retry_after_s: the Retry-After hint sent with 429/503 (busy, draining).
    max_streams: concurrent syntheses in total (None: the engine's capacity, its KV slots plus
        its scheduler's queue: 4 + 60 = 64 on CPU by default); beyond it, 429 with Retry-After.
    max_streams_per_key: concurrent syntheses per API key (or per client address without keys);
        None: half of the total (at least 1), so that one client cannot take every admission.
        Never more than the total.
    max_messages_per_s: sustained WebSocket messages per second per connection (burst: twice that).
    idle_timeout_s: a WebSocket with no message and nothing being spoken for this long is closed.
    max_frame_bytes: largest WebSocket message accepted (uvicorn's ws_max_size).
    drain_timeout_s: on SIGTERM, how long running streams may finish before they are cancelled.
    send_timeout_s: a stream whose client accepts no bytes for this long (a send that cannot
        complete: the client stopped reading) is cancelled, its slot freed and its connection closed.
    stream_buffer_chunks: audio chunks the engine may make ahead of a stream's client; beyond that,
        generation for that stream waits (a slow client costs bounded memory). At most the engine's
        own bound (`MAX_UNREAD_CHUNKS`), which is the default; a smaller value tightens it.
    max_body_bytes: largest request body of the JSON endpoints (413 before reading a larger
        declared Content-Length; a chunked body is cut off at the limit).
    max_upload_bytes / min_voice_s / max_voice_s: limits on reference clips for new voices.
    max_voice_channels / min_voice_sample_rate / max_voice_sample_rate / max_voice_samples: checked
        from a clip's header before it is decoded, and `max_voice_samples` (decoded samples, all
        channels) again while decoding, since headers can lie.
    max_concurrent_uploads: voice uploads being read and decoded at once; more get 429.
    max_voices / max_voices_per_key: registered voices in the store, in total and per API key (per
        client address without keys); more get 403 `voice_quota_exceeded`.
    metrics_public: serve /metrics without a key even when keys are configured (Prometheus usually
        scrapes from inside the network; the metrics hold counts and timings, never text or keys).
    voice_aliases: voice name -> voice id, on the OpenAI and Deepgram endpoints (e.g. {"alloy":
        "narrator"}); each target must exist when the app is made. Stock names without an alias
        speak with the default voice (see `serve.voice_names`).
    """

    api_keys: tuple[str, ...] = ()
    max_input_chars: int = 4096
    max_new_tokens: int = 1000
    default_language: str = "ar"
    warmup: bool = True
    warmup_tokens: int = 4
    retry_after_s: int = 1
    max_streams: int | None = None
    max_streams_per_key: int | None = None
    max_messages_per_s: float = 200.0
    idle_timeout_s: float = 300.0
    max_frame_bytes: int = 1 << 20
    drain_timeout_s: float = 30.0
    send_timeout_s: float = 15.0
    stream_buffer_chunks: int = MAX_UNREAD_CHUNKS  # the engine's own bound: a larger value could not take effect
    max_body_bytes: int = 256 << 10
    max_upload_bytes: int = 10 << 20
    min_voice_s: float = 1.0
    max_voice_s: float = 60.0
    max_voice_channels: int = 2
    min_voice_sample_rate: int = 8000
    max_voice_sample_rate: int = 192_000
    max_voice_samples: int = 60 * 48_000 * 2
    max_concurrent_uploads: int = 2
    max_voices: int = 1000
    max_voices_per_key: int = 100
    metrics_public: bool = True
    voice_aliases: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.api_keys, str):  # a lone string would be taken as a tuple of characters
            raise TypeError("api_keys must be a tuple of strings, not a string")
        if any(not isinstance(k, str) or not k for k in self.api_keys):
            raise ValueError("api_keys must be non-empty strings")
        for name in ("max_input_chars", "max_new_tokens", "warmup_tokens", "retry_after_s", "max_frame_bytes",
                     "stream_buffer_chunks", "max_body_bytes", "max_upload_bytes", "max_voice_channels",
                     "min_voice_sample_rate", "max_voice_sample_rate", "max_voice_samples",
                     "max_concurrent_uploads", "max_voices", "max_voices_per_key"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.stream_buffer_chunks > MAX_UNREAD_CHUNKS:
            raise ValueError(f"stream_buffer_chunks must be <= {MAX_UNREAD_CHUNKS} (the engine's own bound), "
                             f"got {self.stream_buffer_chunks}")
        for name in ("max_streams", "max_streams_per_key"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        for name in ("max_messages_per_s", "idle_timeout_s", "drain_timeout_s", "send_timeout_s", "min_voice_s",
                     "max_voice_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.min_voice_s > self.max_voice_s:
            raise ValueError("min_voice_s must be <= max_voice_s")
        if not isinstance(self.voice_aliases, dict) or any(
                not isinstance(k, str) or not isinstance(v, str) for k, v in self.voice_aliases.items()):
            raise TypeError("voice_aliases must be a dict of voice name -> voice id (strings)")
        if self.min_voice_sample_rate > self.max_voice_sample_rate:
            raise ValueError("min_voice_sample_rate must be <= max_voice_sample_rate")

    def streams_per_key(self, total: int) -> int:
        """The per-client stream limit for a server admitting `total` streams (decoding in KV slots
        plus waiting in the scheduler's queue): by default half of them, so that one client never
        holds every admission (a stream beyond the slots waits its turn, first come first served)."""
        if self.max_streams_per_key is None:
            return max(1, total // 2)
        return min(self.max_streams_per_key, total)
