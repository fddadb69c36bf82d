"""What the server counts and remembers about requests, never the API key itself."""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal


@dataclass(kw_only=True)
class RequestRecord:
    """What a test may check about one inference request; the key's value is never kept."""

    path: str
    query_keys: tuple[str, ...]
    header_names: tuple[str, ...]  # lower-case
    api_key_in: Literal["query", "header", "both"] | None
    confidence: str | None
    image_url: str | None
    content_type: str | None
    content_length: int | None
    status: int | None = None  # None: dropped, hung or cancelled
    received: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` when the request arrived: what a rate limit is judged on."""


@dataclass(kw_only=True)
class ServerStats:
    """Counters; ``requests`` and ``statuses`` are for the inference route only."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    recent: deque[RequestRecord] = field(default_factory=deque)
    in_flight: int = 0
    max_in_flight: int = 0
    drops: int = 0
    hangs: int = 0
    url_fetches: int = 0
    url_cache_hits: int = 0
    bytes_received: int = 0  # request bodies read on the inference route
    credits: float = 0.0  # billed for answers (``ServerConfig.credit_cap``)
    cpu_start: float = field(default_factory=time.process_time)

    @property
    def cpu_seconds(self) -> float:
        """CPU time of the whole process since start (client too, when in-process)."""
        return time.process_time() - self.cpu_start

    @property
    def last(self) -> RequestRecord:
        return self.recent[-1]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, for ``GET /_stats``: the counters and the last 20 requests."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["statuses"] = {str(k): v for k, v in sorted(self.statuses.items())}
        data["cpu_seconds"] = round(self.cpu_seconds, 4)
        data["recent"] = [asdict(r) for r in list(self.recent)[-20:]]
        return data
