"""How the local server behaves: ``ServerConfig``, every fault knob off by default."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """How the server behaves. Every fault knob is off by default; random ones use ``seed``.

    Latency per request is ``(latency + sample) * latency_scale`` where ``sample`` is 0 for
    ``"fixed"`` and, for ``"longtail"``, drawn from a mixture shaped like the hosted API
    (p50 ≈ 0.18 s, p90 ≈ 0.63 s, p99 ≈ 5.6 s). ``rate_limit`` R allows at most R requests in
    any sliding one-second window (for R < 1, one per 1/R seconds); beyond it 429 with
    ``Retry-After`` in whole seconds (at least 1), or ``retry_after`` verbatim when set.
    ``upload_mbps`` reads inference request bodies at most that many megabits per second, in
    total over all connections: a client's uplink to a hosted API, which loopback lacks.
    """

    api_key: str | None = None
    files_dir: Path | None = None
    latency: float = 0.0
    latency_distribution: Literal["fixed", "longtail"] = "fixed"
    latency_scale: float = 1.0
    rate_limit: float | None = None
    retry_after: float | None = None
    upload_mbps: float | None = None
    error_rate: float = 0.0
    drop_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 3600.0
    max_body_bytes: int = 20 * 1024 * 1024
    fetch_timeout: float = 10.0
    url_cache_size: int = 64
    history_size: int = 200
    seed: int = 0
    billing_headers: Literal["off", "serverless", "serverless-remote"] = "off"
    """``serverless``: answers carry Roboflow serverless v2's ``X-Processing-Time`` (seconds
    spent on the request) and ``X-Model-Cold-Start`` (``true`` for a model's first request)
    headers, which clients bill by; ``serverless-remote`` adds ``X-Remote-Processing-Time``
    (the same time, as a remote model server's); ``off``: like the classic hosted API, no such
    headers."""
    processing_time: float | None = None
    """Seconds the cost headers report for a warm request, instead of the time measured;
    with ``processing_time_max``, drawn uniformly between the two (``seed``)."""
    processing_time_max: float | None = None
    cold_start_factor: float = 10.0
    """A cold start (a model's first request) reports this many times a warm request's time."""
    credit_cap: float | None = None
    """The workspace's credits: once the answers billed (by the serverless rule with cost
    headers, else 1 credit per 1,000) reach it, every request is answered 402 with Roboflow's
    body (``"credit_cap_exceeded"``). ``stats.credits`` counts what was billed."""
    model_cost: Literal["pixels", "hash"] = "pixels"
    """``hash``: answer from a checksum of the image bytes, no decoding (a class per image,
    deterministic but meaningless), so a benchmark measures the client, not the server's
    model. The default decodes and classifies by colour."""

    def __post_init__(self) -> None:
        if self.files_dir is not None:  # a str is fine too
            object.__setattr__(self, "files_dir", Path(self.files_dir))
        for name in ("latency", "latency_scale", "hang_seconds", "fetch_timeout"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"ServerConfig.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("error_rate", "drop_rate", "hang_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ServerConfig.{name} must be within 0..1")
        if self.latency_distribution not in ("fixed", "longtail"):
            raise ValueError("ServerConfig.latency_distribution must be 'fixed' or 'longtail'")
        if self.billing_headers not in ("off", "serverless", "serverless-remote"):
            raise ValueError(
                "ServerConfig.billing_headers must be 'off', 'serverless' or 'serverless-remote'"
            )
        for name in ("processing_time", "processing_time_max", "credit_cap"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"ServerConfig.{name} must be >= 0")
        if self.processing_time_max is not None and (
            self.processing_time is None or self.processing_time_max < self.processing_time
        ):
            raise ValueError("ServerConfig.processing_time_max needs a smaller processing_time")
        if not (math.isfinite(self.cold_start_factor) and self.cold_start_factor >= 1):
            raise ValueError("ServerConfig.cold_start_factor must be >= 1")
        if self.model_cost not in ("pixels", "hash"):
            raise ValueError("ServerConfig.model_cost must be 'pixels' or 'hash'")
        limit = self.rate_limit
        if limit is not None and not (math.isfinite(limit) and limit > 0):
            raise ValueError("ServerConfig.rate_limit must be > 0 (leave it unset for no limit)")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError("ServerConfig.retry_after must be >= 0")
        if self.upload_mbps is not None and not self.upload_mbps > 0:
            raise ValueError("ServerConfig.upload_mbps must be > 0 (leave it unset for no limit)")
        if self.max_body_bytes < 1 or self.url_cache_size < 0 or self.history_size < 0:
            raise ValueError("ServerConfig sizes must be positive")


def flag_message(error: ValueError) -> str:
    """A ``ServerConfig`` error as the command line says it: ``ServerConfig.rate_limit`` is
    ``--rate-limit`` there (every knob is a flag of the same name)."""
    return re.sub(r"ServerConfig\.(\w+)", lambda m: "--" + m.group(1).replace("_", "-"), str(error))
