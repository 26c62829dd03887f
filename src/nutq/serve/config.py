"""`ServeConfig`: the server's limits and defaults, fixed when the app is made."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeConfig:
    """What `create_app` needs besides the model.

    api_keys: when non-empty, every endpoint but /healthz and /readyz requires one of these keys
        (`Authorization: Bearer <key>`, `Authorization: Token <key>` or `xi-api-key: <key>`).
    max_input_chars: longest accepted text per request (OpenAI's own limit is 4096).
    max_new_tokens: cap on speech tokens per phrase (25 per second of audio); a request may ask
        for fewer with the `max_tokens` extension field, never more.
    default_language: used when a request names none.
    warmup: synthesize a few tokens at startup so the first request does not pay for lazy
        allocations; /readyz answers 503 until it is done.
    retry_after_s: the Retry-After hint sent with 429 (all streams busy).
    """

    api_keys: tuple[str, ...] = ()
    max_input_chars: int = 4096
    max_new_tokens: int = 1000
    default_language: str = "ar"
    warmup: bool = True
    warmup_tokens: int = 4
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.api_keys, str):  # a lone string would be taken as a tuple of characters
            raise TypeError("api_keys must be a tuple of strings, not a string")
        if any(not isinstance(k, str) or not k for k in self.api_keys):
            raise ValueError("api_keys must be non-empty strings")
        for name in ("max_input_chars", "max_new_tokens", "warmup_tokens", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
