"""What is worth retrying, and how long to wait before the next attempt."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable

from ..config import RetryConfig

#: Statuses that mean "later may work": rate limited, internal error, bad gateway, model
#: loading, gateway timeout. Everything else in 4xx/5xx is final for the item or the job.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
#: The longest pause one ``Retry-After`` buys. A server asking for more (a day, for a spent
#: quota) is asked again after this; the progress display says so.
MAX_RETRY_AFTER = 600.0


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date.

    Returns ``None`` for a missing or unparsable header, so the caller falls back to its backoff.
    Capped at ``MAX_RETRY_AFTER`` (10 minutes): the job asks again then, rather than sleep
    for a day on one answer.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - now()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog's "Full Jitter").

    Full jitter spreads retries of many workers that failed together, so they do not come back
    as one synchronized wave that trips the same rate limit again.
    """

    def __init__(self, config: RetryConfig, *, rng: random.Random | None = None) -> None:
        self._config = config
        self._rng = rng or random.Random()

    def delay(self, failed_attempts: int) -> float:
        """Seconds to wait after the ``failed_attempts``-th failure (1-based)."""
        ceiling = min(
            self._config.backoff_max,
            self._config.backoff_base * (2 ** min(failed_attempts - 1, 30)),
        )
        return self._rng.uniform(0, ceiling)
