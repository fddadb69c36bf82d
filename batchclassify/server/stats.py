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


@dataclass(frozen=True, kw_only=True)
class UploadRecord:
    """One image upload the dataset route accepted (a duplicate included); never the key."""

    project: str
    image_id: str
    name: str
    split: str
    batch: str | None
    tags: tuple[str, ...]
    metadata: dict[str, Any] | None
    source: Literal["file", "url"]
    url: str | None
    """The ``image=`` URL of a hosted image; ``None`` for a multipart upload."""
    sha256: str
    size: int
    duplicate: bool
    """Answered ``duplicate``: the project already held these bytes, under ``image_id``."""


@dataclass(frozen=True, kw_only=True)
class AnnotationRecord:
    """One annotation the annotate route saved (a 409 refusal is not one)."""

    project: str
    image_id: str
    name: str
    annotation: str
    """``annotationFile`` as sent: a class, or a JSON list of classes (multi-label)."""
    labelmap: Any
    job_name: str | None
    prediction: bool
    overwrite: bool


@dataclass(kw_only=True)
class DatasetLog:
    """What the dataset routes received and hold: every accepted upload and annotation, and
    each project's images by content (what ``duplicate`` answers go by)."""

    uploads: list[UploadRecord] = field(default_factory=list)
    annotations: list[AnnotationRecord] = field(default_factory=list)
    images: dict[tuple[str, str], UploadRecord] = field(default_factory=dict)
    """(project, sha256 of the bytes) -> the upload that stored them."""
    by_id: dict[tuple[str, str], UploadRecord] = field(default_factory=dict)
    """(project, image id) -> the upload that stored it."""
    annotated: dict[tuple[str, str], AnnotationRecord] = field(default_factory=dict)
    """(project, image id) -> its current annotation."""
    statuses: Counter[int] = field(default_factory=Counter)
    """Answers of the dataset routes, faults included, by status."""

    def stored(self, project: str) -> list[UploadRecord]:
        """The images ``project`` holds, one upload each, in the order they came."""
        return [record for (name, _), record in self.images.items() if name == project]

    def counts(self) -> dict[str, Any]:
        return {
            "uploads": len(self.uploads),
            "images": len(self.images),
            "annotations": len(self.annotations),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


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
    dataset: DatasetLog = field(default_factory=DatasetLog)
    """The dataset routes' uploads and annotations (``dataset.py``)."""
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
        data["dataset"] = self.dataset.counts()
        return data
