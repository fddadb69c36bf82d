"""The frozen, keyword-only configuration of one job, validated on construction."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import UsageError

DEFAULT_API_URL = "https://classify.roboflow.com"
DEFAULT_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
#: Hosted v2 rejects bodies over 20 MB; base64 grows a file by 4/3, so the cap is on the encoding.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024

_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[1-9][0-9]*$")

OutputFormat = Literal["jsonl", "parquet"]
KeyPlacement = Literal["query", "header"]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


@dataclass(frozen=True, kw_only=True)
class RetryConfig:
    """How often and how long one item is retried after a retryable failure."""

    attempts: int = 6
    """Total attempts per item, the first included."""
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_elapsed: float = 600.0
    """Give up on an item once this many seconds have passed since its first attempt."""

    def __post_init__(self) -> None:
        _require(
            self.attempts >= 1, "retry.attempts: must be at least 1 (use --retries 0 for none)"
        )
        _require(self.backoff_base > 0, "retry.backoff_base: must be positive")
        _require(
            self.backoff_max >= self.backoff_base, "retry.backoff_max: must be >= backoff_base"
        )
        _require(self.max_elapsed > 0, "retry.max_elapsed: must be positive")


@dataclass(frozen=True, kw_only=True)
class RateConfig:
    """Request-rate control shared by all workers."""

    requests_per_second: float | None = None
    """A ceiling: never faster; ``None`` lets the adaptive controller find the server's limit."""
    adaptive: bool = True
    """Cut the rate on 429 and creep back up while requests succeed (up to the ceiling, if
    any); ``False`` holds ``requests_per_second`` fixed whatever the server answers."""
    max_outage: float = 1800.0
    """Seconds the job waits for an unreachable API before it stops (resumable)."""
    outage_after: float = 5.0
    """Seconds with only failures (no answer at all, or 5xx) before the job pauses as an outage."""
    probe_initial: float = 1.0
    """First wait between probes during an outage; it doubles up to ``probe_max``."""
    probe_max: float = 60.0
    stall_after: float | None = None
    """Watchdog: seconds with requests in flight and none completing before they are cancelled
    and retried; ``None`` means three times the request timeout."""

    def __post_init__(self) -> None:
        if self.stall_after is not None:
            _require(self.stall_after > 0, "rate.stall_after: must be positive")
        if self.requests_per_second is not None:
            _require(self.requests_per_second > 0, "--rate-limit: must be a positive number")
        _require(self.max_outage > 0, "--max-outage: must be positive")
        _require(self.outage_after > 0, "rate.outage_after: must be positive")
        _require(
            0 < self.probe_initial <= self.probe_max,
            "rate.probe_initial: must be in (0, probe_max]",
        )


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    """Where requests go and how each one is bounded."""

    api_url: str = DEFAULT_API_URL
    """The API's base URL, or ``"local"`` for the embedded Roboflow-compatible server."""
    api_key: str | None = field(default=None, repr=False)
    api_key_in: KeyPlacement = "query"
    concurrency: int = 32
    timeout: float = 60.0
    """Total seconds for one request, connect included."""
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        _require(
            self.api_url == "local" or self.api_url.startswith(("http://", "https://")),
            f"--api-url: {self.api_url!r} is not an http(s) URL (or use 'local')",
        )
        _require(self.api_key_in in ("query", "header"), "--api-key-in: use 'query' or 'header'")
        _require(1 <= self.concurrency <= 4096, "--concurrency: must be between 1 and 4096")
        _require(self.timeout > 0, "--timeout: must be positive")
        _require(self.connect_timeout > 0, "connect_timeout: must be positive")


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """Everything one classification job needs; build it, then hand it to ``run_job``."""

    sources: tuple[str, ...]
    model: str
    output: Path
    output_format: OutputFormat | None = None
    """``None`` picks it from the output's suffix (``.parquet`` or else JSONL)."""
    confidence: float | None = None
    extensions: frozenset[str] = DEFAULT_EXTENSIONS
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_size: int | None = None
    """Downscale images whose longer side exceeds this many pixels before upload."""
    jpeg_quality: int = 90
    overwrite: bool = False
    retry_failed: bool = False
    max_failures: int | None = None
    http: HttpConfig = field(default_factory=HttpConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    rate: RateConfig = field(default_factory=RateConfig)

    def __post_init__(self) -> None:
        _require(
            len(self.sources) > 0, "no source given: name a folder, a manifest, or - for stdin"
        )
        _require(
            bool(_MODEL_RE.match(self.model)),
            f"--model: {self.model!r} is not SLUG/VERSION, e.g. vehicle-classification-eapcd/2",
        )
        if self.confidence is not None:
            _require(0 <= self.confidence <= 100, "--confidence: use 0..1 (or a percent up to 100)")
        _require(len(self.extensions) > 0, "--extensions: name at least one extension")
        if self.max_size is not None:
            _require(self.max_size >= 16, "--max-size: must be at least 16 pixels")
        _require(1 <= self.jpeg_quality <= 100, "--jpeg-quality: must be between 1 and 100")
        if self.max_failures is not None:
            _require(self.max_failures >= 1, "--max-failures: must be at least 1")
        _require(
            not (self.overwrite and self.retry_failed),
            "--overwrite and --retry-failed contradict each other: pick one",
        )
        if self.output_format is None:
            fmt: OutputFormat = "parquet" if self.output.suffix.lower() == ".parquet" else "jsonl"
            object.__setattr__(self, "output_format", fmt)
        _require(self.output_format in ("jsonl", "parquet"), "--format: use jsonl or parquet")

    @property
    def format(self) -> OutputFormat:
        assert self.output_format is not None  # set in __post_init__
        return self.output_format

    @property
    def model_slug(self) -> str:
        return self.model.split("/", 1)[0]

    @property
    def model_version(self) -> str:
        return self.model.split("/", 1)[1]
