"""The frozen, keyword-only configuration of one job, validated on construction."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeAlias, get_args
from urllib.parse import urlsplit

from .errors import UsageError
from .shards import Shard

#: Roboflow's serverless v2 endpoint, which its docs name the default (docs/cost.md: "Which
#: endpoint"); the legacy hosted v1 (https://classify.roboflow.com) is ``--api-url`` away.
DEFAULT_API_URL = "https://serverless.roboflow.com"
DEFAULT_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff"})
#: Hosted v2 rejects bodies over 20 MB; base64 grows a file by 4/3, so the cap is on the encoding.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Seconds for a connection to be accepted, unless half the request timeout is less.
DEFAULT_CONNECT_TIMEOUT = 10.0

_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[1-9][0-9]*$")

OutputFormat = Literal["jsonl", "parquet"]
#: What ``--output``'s suffix says about its format when ``--format`` is not given.
OUTPUT_SUFFIXES: dict[str, OutputFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
KeyPlacement = Literal["query", "header"]
#: What a job does with an output that holds rows already (``JobConfig.existing``).
Existing = Literal["resume", "retry_failed", "overwrite"]
#: What ``JobConfig(sources=...)`` accepts: one source, or several.
SourcesArg: TypeAlias = "str | os.PathLike[str] | Iterable[str | os.PathLike[str]]"


def _require(condition: bool, field_name: str, problem: str) -> None:
    """Refuse a value: the message names the field (the CLI shows its flag instead)."""
    if not condition:
        raise UsageError(f"{field_name}: {problem}", field=field_name, problem=problem)


def _positive(value: float) -> bool:
    """A finite number above zero: NaN and infinity are no durations or rates."""
    return math.isfinite(value) and value > 0


def _as_sources(sources: SourcesArg) -> tuple[str, ...]:
    """One source (a ``str`` or a path) or an iterable of them, as a tuple of strings.

    A bare string is one source, never a sequence of one-letter sources.
    """
    if isinstance(sources, str | os.PathLike):
        return (os.fspath(sources),)
    items = tuple(sources)
    for source in items:
        _require(
            isinstance(source, str | os.PathLike),
            "sources",
            f"{source!r} is not a source; give folders, manifests or '-' as str or Path",
        )
    return tuple(os.fspath(source) for source in items)


def _is_hosted(url: str) -> bool:
    """Is ``url`` Roboflow's hosted API (a ``roboflow.com`` server), which needs a key?"""
    host = urlsplit(url).hostname or ""
    return host == "roboflow.com" or host.endswith(".roboflow.com")


def _as_servers(api_url: str | Iterable[str]) -> str | tuple[str, ...]:
    """``api_url`` checked: one http(s) URL or ``"local"`` stays a ``str``; several distinct
    http(s) URLs become a tuple (a sequence of one is that one URL)."""
    if isinstance(api_url, str):
        urls: tuple[object, ...] = (api_url,)
    elif isinstance(api_url, Iterable):
        urls = tuple(api_url)
    else:
        urls = (api_url,)  # refused below: not a str
    _require(len(urls) > 0, "http.api_url", "no server given: name at least one URL")
    bases = []
    for url in urls:
        text = url if isinstance(url, str) else ""
        local = text == "local"
        _require(
            (local and len(urls) == 1) or text.startswith(("http://", "https://")),
            "http.api_url",
            f"{url!r} is not an http(s) URL"
            + (" ('local' cannot be one of several servers)" if local else " (or use 'local')"),
        )
        bases.append(text.rstrip("/"))
    for base in bases:
        _require(bases.count(base) == 1, "http.api_url", f"{base!r} is given more than once")
    servers = tuple(map(str, urls))
    return servers[0] if len(servers) == 1 else servers


def _format_from_suffix(output: Path) -> OutputFormat:
    fmt = OUTPUT_SUFFIXES.get(output.suffix.lower())
    said = f"'{output.suffix}' is not an output format" if output.suffix else "no suffix"
    _require(
        fmt is not None,
        "output",
        f"{output}: {said}; name a .jsonl, .ndjson or .parquet output, or set output_format "
        "to jsonl or parquet",
    )
    assert fmt is not None
    return fmt


@dataclass(frozen=True, kw_only=True)
class RetryConfig:
    """How often and how long one item is retried after a retryable failure."""

    retries: int = 5
    """Extra attempts per item after failures of its own (``--retries``); 0: none. 429
    answers and failures during an outage do not count (see ``--retries`` in docs/options.md)."""
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_elapsed: float = 600.0
    """Give up on an item once this many seconds have passed since its first attempt."""

    def __post_init__(self) -> None:
        _require(self.retries >= 0, "retry.retries", "must be 0 or more")
        _require(_positive(self.backoff_base), "retry.backoff_base", "must be positive")
        _require(
            self.backoff_max >= self.backoff_base, "retry.backoff_max", "must be >= backoff_base"
        )
        _require(_positive(self.max_elapsed), "retry.max_elapsed", "must be positive")

    @property
    def attempts(self) -> int:
        """Attempts that count per item, the first included: ``retries`` + 1."""
        return self.retries + 1


@dataclass(frozen=True, kw_only=True)
class RateConfig:
    """Request-rate control shared by all workers."""

    requests_per_second: float | None = None
    """A ceiling: never faster; ``None`` lets the adaptive controller find the server's limit."""
    adaptive: bool = True
    """Cut the rate on 429 and creep back up while requests succeed (up to the ceiling, if
    any); ``False`` holds ``requests_per_second`` fixed whatever the server answers, and so
    needs one: with neither there would be no rate control at all."""

    def __post_init__(self) -> None:
        if self.requests_per_second is not None:
            _require(
                _positive(self.requests_per_second),
                "rate.requests_per_second",
                "must be a positive number of requests per second "
                "(leave it out to adapt to the server's limit)",
            )
        _require(
            self.adaptive or self.requests_per_second is not None,
            "rate.adaptive",
            "False holds rate.requests_per_second fixed, and none is given: give the rate "
            "to hold, or leave adaptive on to find the server's limit",
        )


@dataclass(frozen=True, kw_only=True)
class OutageConfig:
    """When failures everywhere mean the API is down, how it is probed, how long it is awaited."""

    max_outage: float = 1800.0
    """Seconds the job waits for an unreachable API before it stops (resumable)."""
    outage_after: float = 5.0
    """Seconds with only failures (no answer at all, or 5xx) before the job pauses as an outage."""
    probe_initial: float = 1.0
    """First wait between probes during an outage; it doubles up to ``probe_max``."""
    probe_max: float = 60.0

    def __post_init__(self) -> None:
        _require(
            _positive(self.max_outage), "outage.max_outage", "must be a positive number of seconds"
        )
        _require(_positive(self.outage_after), "outage.outage_after", "must be positive")
        _require(
            _positive(self.probe_max) and 0 < self.probe_initial <= self.probe_max,
            "outage.probe_initial",
            "must be in (0, probe_max]",
        )


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    """Where requests go and how each one is bounded.

    ``api_url`` takes one server (a ``str``) or several servers of one API (a sequence of
    them, as ``--api-url`` given more than once): one field, so the servers cannot disagree.
    After construction it is a ``str`` for one server and a tuple for several; ``servers`` is
    always the tuple.
    """

    api_url: str | tuple[str, ...] = DEFAULT_API_URL
    """The API's base URL, ``"local"`` for the embedded Roboflow-compatible server, or
    several base URLs of one API (``api/fleet.py``: requests are spread over them)."""
    api_key: str | None = field(default=None, repr=False)
    api_key_in: KeyPlacement = "query"
    concurrency: int = 32
    timeout: float = 60.0
    """Total seconds for one request, connect included."""
    connect_timeout: float | None = None
    """Seconds for the connection to be accepted; ``None``: ``DEFAULT_CONNECT_TIMEOUT``, or
    half of ``timeout`` if that is less. Requests use ``connect_seconds``."""
    stall_after: float | None = None
    """Watchdog: seconds with requests in flight and none completing before they are cancelled
    and retried; ``None`` means three times ``timeout``."""

    if TYPE_CHECKING:  # what the generated __init__ accepts; __post_init__ normalises it

        def __init__(
            self,
            *,
            api_url: str | Sequence[str] = ...,
            api_key: str | None = ...,
            api_key_in: KeyPlacement = ...,
            concurrency: int = ...,
            timeout: float = ...,
            connect_timeout: float | None = ...,
            stall_after: float | None = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "api_url", _as_servers(self.api_url))
        _require(self.api_key_in in ("query", "header"), "http.api_key_in", "use query or header")
        _require(1 <= self.concurrency <= 4096, "http.concurrency", "must be between 1 and 4096")
        _require(_positive(self.timeout), "http.timeout", "must be a positive number of seconds")
        if self.connect_timeout is not None:
            _require(_positive(self.connect_timeout), "http.connect_timeout", "must be positive")
        if self.stall_after is not None:
            _require(_positive(self.stall_after), "http.stall_after", "must be positive")

    @property
    def connect_seconds(self) -> float:
        """The connect timeout requests use: under the request's own ``timeout`` (half of
        it by default), so a connection never accepted (a wrong address, a firewall) is told
        from a slow answer, and a job that never reached its API stops in seconds
        (``health.py``) for the library, ``run``, ``plan`` and ``--processes`` children alike."""
        if self.connect_timeout is None:
            return min(DEFAULT_CONNECT_TIMEOUT, self.timeout / 2)
        return min(self.connect_timeout, self.timeout)

    @property
    def servers(self) -> tuple[str, ...]:
        """The base URL of each server: ``api_url``'s, as a tuple of one or more."""
        return (self.api_url,) if isinstance(self.api_url, str) else self.api_url

    def check_key(self) -> None:
        """Refuse to start without a key where one is required: Roboflow's hosted API (a
        ``roboflow.com`` server) answers every request without one with 401.

        Asked when a job starts (``Job.run``: ``classify()``, ``run`` and ``--processes``
        children alike; the CLI asks before it starts children), not on construction: a
        config may be made before its key is known (Ray's actors read ``$ROBOFLOW_API_KEY``
        on their own machines)."""
        hosted = [url for url in self.servers if _is_hosted(url)]
        if hosted and not self.api_key:
            _require(
                False,
                "http.api_key",
                f"none given, and Roboflow's hosted API ({hosted[0]}) needs one: find it in "
                "your Roboflow workspace settings",
            )


@dataclass(frozen=True, kw_only=True)
class WatchConfig:
    """``run --watch``: after the first walk, keep following the folders (``watching.py``)."""

    settle: float = 2.0
    """A new file is sent once its size and mtime have not changed for this many seconds."""
    poll: float | None = None
    """Seconds between listings of the folders; ``None``: file-system notifications
    (inotify, through ``watchfiles``) where they work, else polling every ``DEFAULT_POLL``;
    object-store prefixes every ``DEFAULT_OBJECT_POLL``."""
    until: float | None = None
    """Stop following at this wall-clock time (``time.time()`` seconds; ``--watch-until``)."""
    idle_exit: float | None = None
    """Stop following once nothing new has arrived for this many seconds, backlog sent."""

    DEFAULT_POLL = 2.0
    #: Object-store prefixes: a listing is a billed request per 1,000 keys (docs/watch.md).
    DEFAULT_OBJECT_POLL = 30.0

    def __post_init__(self) -> None:
        _require(
            math.isfinite(self.settle) and self.settle >= 0,
            "watch.settle",
            "must be 0 or more seconds",
        )
        if self.poll is not None:
            _require(_positive(self.poll), "watch.poll", "must be a positive number of seconds")
        if self.idle_exit is not None:
            _require(
                _positive(self.idle_exit), "watch.idle_exit", "must be a positive number of seconds"
            )


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """Everything one classification job needs; build it, then hand it to ``run_job``.

    ``sources`` takes one source (a ``str`` or a ``Path``) or several; ``output`` a ``str``
    or a ``Path``. After construction they are a tuple of strings and a ``Path``.
    """

    sources: tuple[str, ...]
    model: str
    output: Path
    output_format: OutputFormat | None = None
    """``None`` picks it from the output's suffix (``.jsonl``/``.ndjson`` or ``.parquet``);
    any other suffix needs it, so ``results.csv`` is not silently written as JSONL."""
    confidence: float | None = None
    extensions: frozenset[str] = DEFAULT_EXTENSIONS
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_size: int | None = None
    """Downscale images whose longer side exceeds this many pixels before upload."""
    jpeg_quality: int = 90
    existing: Existing = "resume"
    """An output that holds rows already: ``"resume"`` adds the items not recorded yet (what
    rerunning the same command does), ``"retry_failed"`` resumes and classifies the failed
    rows again (``--retry-failed``), ``"overwrite"`` starts over (``--overwrite``: only a
    batchclassify output is removed)."""
    max_failures: int | None = None
    cache: Path | None = None
    """The answer cache file (``--cache``): answers found there are not requested again,
    and every answer is stored there. ``None``: no cache (identical images in flight at the
    same time still share one request)."""
    shard: Shard | None = None
    """``--shard I/N``: only the items whose id hashes to shard I of N (``shards.py``)."""
    max_credits: float | None = None
    """``--max-credits``: this run starts no request that could take its spend past this
    many credits (``job/budget.py``); ``None``: no cap."""
    billing: str | None = None
    """``--billing``: the billing rule requests are priced by (a ``cost.Billing`` value);
    ``None``: the API URL's (``cost.rule_for_url``)."""
    watch: WatchConfig | None = None
    """``--watch``: keep following the folders after the first walk (``None``: walk once)."""
    http: HttpConfig = field(default_factory=HttpConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    rate: RateConfig = field(default_factory=RateConfig)
    outage: OutageConfig = field(default_factory=OutageConfig)

    if TYPE_CHECKING:  # what the generated __init__ accepts; __post_init__ normalises it

        def __init__(
            self,
            *,
            sources: SourcesArg,
            model: str,
            output: str | os.PathLike[str],
            output_format: OutputFormat | None = ...,
            confidence: float | None = ...,
            extensions: frozenset[str] = ...,
            max_upload_bytes: int = ...,
            max_size: int | None = ...,
            jpeg_quality: int = ...,
            existing: Existing = ...,
            max_failures: int | None = ...,
            cache: str | os.PathLike[str] | None = ...,
            shard: Shard | None = ...,
            max_credits: float | None = ...,
            billing: str | None = ...,
            watch: WatchConfig | None = ...,
            http: HttpConfig = ...,
            retry: RetryConfig = ...,
            rate: RateConfig = ...,
            outage: OutageConfig = ...,
        ) -> None: ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", _as_sources(self.sources))
        _require(
            isinstance(self.output, str | os.PathLike),
            "output",
            f"{self.output!r} is not a path (a str or a Path)",
        )
        object.__setattr__(self, "output", Path(self.output))
        if self.cache is not None:
            object.__setattr__(self, "cache", Path(self.cache))
        _require(
            len(self.sources) > 0,
            "sources",
            "none given: name a folder, a manifest, or - for stdin",
        )
        _require(
            bool(_MODEL_RE.match(self.model)),
            "model",
            f"{self.model!r} is not SLUG/VERSION, e.g. vehicle-classification-eapcd/2",
        )
        if self.confidence is not None:
            _require(
                0 <= self.confidence <= 1,
                "confidence",
                f"{self.confidence:g} is not between 0 and 1; it is a fraction (0.5 means 50%)",
            )
        _require(len(self.extensions) > 0, "extensions", "name at least one extension")
        if self.max_size is not None:
            _require(self.max_size >= 16, "max_size", "must be at least 16 pixels")
        _require(1 <= self.jpeg_quality <= 100, "jpeg_quality", "must be between 1 and 100")
        if self.max_failures is not None:
            _require(self.max_failures >= 1, "max_failures", "must be at least 1")
        _require(
            self.existing in get_args(Existing),
            "existing",
            f"{self.existing!r} is not one of {', '.join(get_args(Existing))}",
        )
        if self.max_credits is not None:
            _require(
                math.isfinite(self.max_credits) and self.max_credits >= 0,
                "max_credits",
                "must be a number of credits, 0 or more",
            )
        if self.billing is not None:
            from .cost import Billing

            _require(
                self.billing in set(Billing),
                "billing",
                f"{self.billing!r} is not one of {', '.join(Billing)}",
            )
        if self.output_format is None:
            object.__setattr__(self, "output_format", _format_from_suffix(self.output))
        _require(
            self.output_format in ("jsonl", "parquet"), "output_format", "use jsonl or parquet"
        )

    @property
    def format(self) -> OutputFormat:
        assert self.output_format is not None  # set in __post_init__
        return self.output_format
