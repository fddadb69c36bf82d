"""Fault knobs: scripted and per-image answers, the rate limit, the uplink, latency."""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class Fault:
    """One scripted answer. ``headers=None`` means the real server's defaults for ``status``
    (``Retry-After`` on 429 and 503); ``{}`` sends none."""

    status: int = 200
    action: Literal["answer", "drop", "hang"] = "answer"
    headers: Mapping[str, str] | None = None
    message: str | None = None
    delay: float = 0.0
    body: bytes | None = None
    """Sent as is instead of the ``{"message": ...}`` JSON (with any status, 200 too): an HTML
    error page, a truncated or non-JSON body. Content type from ``headers``, else guessed."""


FaultSpec = int | Literal["drop", "hang"] | Fault


def as_fault(spec: FaultSpec) -> Fault:
    if isinstance(spec, Fault):
        return spec
    if spec == "drop" or spec == "hang":
        return Fault(action=spec)
    if isinstance(spec, int) and 100 <= spec <= 599:
        return Fault(status=spec)
    raise ValueError(f"not a fault: {spec!r} (use a status, 'drop', 'hang' or a Fault)")


def image_key(data: bytes) -> str:
    """The key ``fail_image`` files an image's bytes under: a PNG's text chunks left out, so
    a fault follows the picture whatever text it carries (tests give each copy of a picture
    bytes of its own that way, so a client does not answer one copy from another)."""
    return hashlib.sha256(_without_png_text(data)).hexdigest()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _without_png_text(data: bytes) -> bytes:
    if not data.startswith(_PNG_SIGNATURE):
        return data
    kept = [_PNG_SIGNATURE]
    at = len(_PNG_SIGNATURE)
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        end = at + 12 + length
        if data[at + 4 : at + 8] not in _PNG_TEXT_CHUNKS:
            kept.append(data[at:end])
        at = end
    kept.append(data[at:])
    return b"".join(kept)


class SlidingWindowLimiter:
    """At most ``capacity`` accepted requests in any ``window`` seconds.

    A sliding log rather than a token bucket so "R requests per second" holds for every
    one-second span, which is what a client-side test can assert. Rejections do not count.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = max(1.0, 1.0 / rate)
        self.capacity = max(1, math.floor(rate * self.window + 1e-9))
        self._clock = clock
        self._accepted: deque[float] = deque()

    def acquire(self) -> float | None:
        """``None`` if a request may go ahead now, else the seconds until one may."""
        now = self._clock()
        while self._accepted and self._accepted[0] <= now - self.window:
            self._accepted.popleft()
        if len(self._accepted) < self.capacity:
            self._accepted.append(now)
            return None
        return self._accepted[0] + self.window - now


class Uplink:
    """A link of ``rate`` bytes per second that every connection's upload shares.

    A token bucket with room for one chunk only, kept as the time the link is next free: each
    chunk occupies the link for ``size / rate`` seconds after the chunks booked before it, so
    concurrent uploads share the rate and an idle link banks no burst.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._free_at = -math.inf

    def reserve(self, size: int) -> float:
        """Book ``size`` bytes; the seconds until they have crossed the link."""
        now = self._clock()
        self._free_at = max(self._free_at, now) + size / self.rate
        return self._free_at - now


class Faults:
    """Scripted answers; a lock because ``BackgroundServer`` callers live in another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._script: deque[Fault] = deque()
        self._images: dict[str, tuple[Fault, int | None]] = {}

    def push(self, faults: list[Fault]) -> None:
        with self._lock:
            self._script.extend(faults)

    def next(self) -> Fault | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def add_image(self, key: str, fault: Fault, times: int | None) -> None:
        with self._lock:
            self._images[key] = (fault, times)

    def for_image(self, key: str) -> Fault | None:
        with self._lock:
            entry = self._images.get(key)
            if entry is None:
                return None
            fault, times = entry
            if times is not None:
                if times <= 1:
                    del self._images[key]
                else:
                    self._images[key] = (fault, times - 1)
            return fault

    @property
    def has_images(self) -> bool:
        return bool(self._images)

    def clear(self) -> None:
        with self._lock:
            self._script.clear()
            self._images.clear()


def longtail_latency(rng: random.Random) -> float:
    """Hosted-API-shaped latency: a lognormal body plus 3% of multi-second stragglers."""
    if rng.random() < 0.03:
        return math.exp(rng.gauss(math.log(4.6), 0.45))
    return math.exp(rng.gauss(math.log(0.17), 0.9))
