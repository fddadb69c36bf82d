"""What a request cost, as the server reports it: Roboflow's serverless billing headers.

Roboflow's serverless (v2) inference servers time each request and say so in the answer's
headers; the docs bill ``max(processing time, 100 ms) / 500,000 ms`` credits per request.
Servers that send no ``X-Processing-Time`` (the classic hosted v1 endpoints, older
self-hosted servers) leave the cost columns empty: nothing is guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

#: Seconds the server spent on the request, as a decimal number ("0.0421").
PROCESSING_TIME_HEADER = "X-Processing-Time"
#: "true" when the request had to load the model first (a cold start).
COLD_START_HEADER = "X-Model-Cold-Start"
#: Billing: every request counts at least this many milliseconds...
MIN_BILLED_MS = 100.0
#: ...and this many billed milliseconds make one credit.
MS_PER_CREDIT = 500_000.0


def credits_for(server_ms: float) -> float:
    """Credits one request costs under the serverless rule, from its processing time."""
    return max(server_ms, MIN_BILLED_MS) / MS_PER_CREDIT


def read_cost_headers(headers: Mapping[str, str]) -> tuple[float | None, bool | None]:
    """``(processing ms, cold start)`` from an answer's headers; ``None`` for what is absent
    or unreadable (a value that is no finite, non-negative number is not trusted)."""
    server_ms: float | None = None
    raw = headers.get(PROCESSING_TIME_HEADER)
    if raw is not None:
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds) and seconds >= 0:
            server_ms = round(seconds * 1000.0, 3)
    cold = headers.get(COLD_START_HEADER)
    cold_start = None if cold is None else cold.strip().lower() == "true"
    return server_ms, cold_start
