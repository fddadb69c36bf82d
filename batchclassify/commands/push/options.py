"""What a push is asked to do: the project, which rows, where they go; parsed and checked."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ...config import HttpConfig, OutageConfig, RateConfig, RetryConfig
from ...errors import UsageError

SELECTIONS = ("all", "review")
#: The splits a Roboflow project has.
ROBOFLOW_SPLITS = frozenset({"train", "valid", "test"})
#: Images in flight at once. Roboflow's own uploader (``Workspace.upload_dataset``) runs 10
#: workers; an upload is a whole file (not a thumbnail) and the API answers in about a second,
#: so 10 keep a typical uplink busy without meeting the API's rate limit, which the adaptive
#: controller finds anyway (no fixed rate: it learns the limit from 429s).
DEFAULT_CONCURRENCY = 10
#: Roboflow's project slugs: lowercase letters, digits and dashes.
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True, kw_only=True)
class PushOptions:
    """One push: every option of ``batchclassify push``, validated."""

    output: Path
    project: str
    select: Literal["all", "review"] = "all"
    min_confidence: float = 0.5
    """``review``: rows whose top confidence is below this (or with no class) need review."""
    per_class: int | None = None
    limit: int | None = None
    splits: tuple[tuple[str, float], ...] = (("train", 1.0),)
    seed: str = "0"
    batch: str | None = None
    tags: tuple[str, ...] = ()
    only: Path | None = None
    """A manifest (``select``'s): only the rows of its ids."""
    dry_run: bool = False
    overwrite_annotations: bool = False
    ledger: Path | None = None
    """Default: beside the output (``ledger.ledger_path``)."""
    http: HttpConfig = field(
        default_factory=lambda: HttpConfig(
            api_url="https://api.roboflow.com", concurrency=DEFAULT_CONCURRENCY
        )
    )
    retry: RetryConfig = field(default_factory=RetryConfig)
    rate: RateConfig = field(default_factory=RateConfig)
    outage: OutageConfig = field(default_factory=OutageConfig)

    def __post_init__(self) -> None:
        if "/" in self.project:
            raise UsageError(
                f"--project {self.project}: give the project's URL slug alone (the part after "
                "the workspace: the key says which workspace)"
            )
        if not _SLUG.match(self.project):
            raise UsageError(f"--project {self.project!r}: not a project slug")
        if self.select not in SELECTIONS:
            raise UsageError(f"--select {self.select}: choose one of {', '.join(SELECTIONS)}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise UsageError(f"--min-confidence {self.min_confidence:g}: must be within 0..1")
        for flag, value in (("--per-class", self.per_class), ("--limit", self.limit)):
            if value is not None and value < 1:
                raise UsageError(f"{flag} {value}: must be at least 1")
        for name, _ in self.splits:
            if name not in ROBOFLOW_SPLITS:
                raise UsageError(
                    f"--split: {name!r} is not a Roboflow split; use train, valid and test"
                )
