"""The limits of ``retrievekit serve``, in one record (each is a command-line option)."""

from __future__ import annotations

from dataclasses import dataclass

from retrievekit.errors import ConfigError

__all__ = ["ServeSettings"]


@dataclass(frozen=True)
class ServeSettings:
    """How a server batches and what it refuses.

    ``max_batch_tokens``: tokens (sum over the texts, TEI's measure and its default) that one model
    batch may hold; ``batch_wait_ms``: how long the first request of a batch waits for others to join;
    ``max_client_batch``: texts (or documents) one request may send, larger ones get 413;
    ``max_queue``: texts waiting per model before new requests get 429 with ``Retry-After``;
    ``request_timeout``: seconds before a request gets 504 (its texts not yet run are dropped);
    ``truncate``: cut over-long inputs to the model's limit (counted in the ``X-Truncated-Inputs``
    header) or refuse the request with 413; ``max_body_bytes``: request bodies past it get 413;
    ``threads``: CPU threads of the model workers (one batch runs at a time on them, so concurrent
    requests never oversubscribe the cores); ``api_key``: when set, every route but ``/health``
    needs ``Authorization: Bearer <key>``."""

    max_batch_tokens: int = 16_384
    batch_wait_ms: float = 2.0
    max_client_batch: int = 2048
    max_queue: int = 16_384
    request_timeout: float = 60.0
    truncate: bool = True
    max_body_bytes: int = 16 * 1024 * 1024
    threads: int | None = None
    api_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch_tokens", "max_client_batch", "max_queue", "max_body_bytes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_wait_ms < 0 or self.request_timeout <= 0:
            raise ConfigError("batch_wait_ms must be >= 0 and request_timeout > 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("api_key must not be empty")
