"""What a caller's progress listener is told: a snapshot (``Progress``), each row, news.

Before, ``ProgressListener`` had eleven methods, most of them the runner's count bookkeeping
(``listed``, ``add_total``, ``listing_finished``, ``counted``...): a caller had to implement
them, or subclass ``SilentProgress``, to follow a job. Now three, and the runner keeps the
count.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from yarl import URL

from batchclassify import HttpConfig, JobConfig, Progress, Response, RetryConfig, classify

from .conftest import read_rows


class _Answers:
    """A ``Transport`` answering at once: a 500 for ``bad``, else the image's name."""

    def __init__(self, bad: str) -> None:
        self._bad = bad

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        image = url.query["image"]
        if image == self._bad:
            return Response(500, {}, b'{"message": "Internal error."}')
        answer = {"top": image, "confidence": 0.9, "predictions": []}
        return Response(200, {}, orjson.dumps(answer))

    async def aclose(self) -> None:
        pass


class Follower:
    """A listener of a caller's own: the three methods, nothing inherited."""

    def __init__(self) -> None:
        self.snapshots: list[Progress] = []
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str | None] = []

    def progress(self, progress: Progress) -> None:
        self.snapshots.append(progress)

    def row(self, row: Mapping[str, Any]) -> None:
        self.rows.append(dict(row))

    def note(self, text: str | None) -> None:
        self.notes.append(text)


def test_a_listener_of_three_methods_follows_a_job_from_start_to_end(tmp_path: Path) -> None:
    urls = [f"https://images.example/{n}.jpg" for n in range(30)]
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    config = JobConfig(
        sources=tmp_path / "urls.txt",
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(api_url="https://api.example", api_key="k", concurrency=4),
        retry=RetryConfig(retries=1, backoff_base=0.01, backoff_max=0.02),
    )
    follower = Follower()

    summary = classify(config, progress=follower, transport=_Answers(bad=urls[7]))

    first, last = follower.snapshots[0], follower.snapshots[-1]
    assert (first.done, first.finished) == (0, False)
    assert last.finished and not any(s.finished for s in follower.snapshots[:-1])
    assert (last.ok, last.failed, last.done) == (summary.ok, summary.failed, 30)
    assert last.total == 30 and last.total_is_exact and last.retries == summary.retries > 0
    # Every row, as written; the totals only grow, and never fall below what is done.
    assert follower.rows == read_rows(config.output)
    totals = [s.total for s in follower.snapshots if s.total is not None]
    assert totals == sorted(totals) and all(s.total is None or s.total >= s.done
                                            for s in follower.snapshots)  # fmt: skip


def test_a_resumed_job_starts_from_what_was_done(tmp_path: Path) -> None:
    urls = [f"https://images.example/{n}.jpg" for n in range(12)]
    (tmp_path / "urls.txt").write_text("\n".join(urls[:5]) + "\n")
    config = JobConfig(
        sources=tmp_path / "urls.txt",
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(api_url="https://api.example", api_key="k"),
    )
    classify(config, transport=_Answers(bad=""))
    (tmp_path / "urls.txt").write_text("\n".join(urls) + "\n")
    follower = Follower()

    classify(config, progress=follower, transport=_Answers(bad=""))

    assert follower.snapshots[0].already_done == 5
    last = follower.snapshots[-1]
    assert (last.already_done, last.ok, last.done, last.total) == (5, 7, 12, 12)
    assert len(follower.rows) == 7
