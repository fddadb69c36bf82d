"""The Ray Data callable called directly, without Ray: ``Classifier`` is a plain async
function of a batch, so its behaviour is tested here in-process, against the local server or
an in-memory transport. tests/test_ray.py keeps the few tests that need a real local Ray.

It runs the job's own request loop (job/requesting.py) and reads the job's config objects
with the job's meanings: each former drift has a test here (the rate is a ceiling that
backs off on 429, ``http.concurrency`` is the requests in flight, messages say "requests").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from yarl import URL

from batchclassify.api.client import Response
from batchclassify.config import HttpConfig, OutageConfig, RateConfig, RetryConfig
from batchclassify.error_types import ErrorType
from batchclassify.errors import RetryableError, UsageError
from batchclassify.ray_data import Classifier
from batchclassify.server import BackgroundServer

from .conftest import KEY, png
from .virtualtime import loop_time, run_virtual

pytest.importorskip("pyarrow")

_ANSWER = orjson.dumps(
    {"top": "red", "confidence": 0.9, "predictions": [{"class": "red", "confidence": 0.9}]}
)


def rows_of(classifier: Classifier, *batches: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Each batch through the classifier in turn, on one event loop (as an actor's)."""

    async def main() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        try:
            for batch in batches:
                rows.extend((await classifier(batch)).to_pylist())
        finally:
            await classifier.aclose()
        return rows

    return asyncio.run(main())


def images(count: int, prefix: str = "img") -> dict[str, list[Any]]:
    colors = ["red", "green", "blue", "yellow"]
    return {
        "bytes": [png(colors[n % 4], side=8 + n % 7) for n in range(count)],
        "id": [f"{prefix}-{n}" for n in range(count)],
    }


def urls(count: int, prefix: str = "img") -> dict[str, list[Any]]:
    """Images given by URL: nothing to encode, so no thread, as a virtual clock needs."""
    return {
        "url": [f"https://images.example/{prefix}-{n}.png" for n in range(count)],
        "id": [f"{prefix}-{n}" for n in range(count)],
    }


def http(server: BackgroundServer, **options: Any) -> HttpConfig:
    return HttpConfig(api_url=server.url, api_key=KEY, **options)


class MemoryServer:
    """An in-memory transport that answers every request, recording when each was sent and
    how many were in flight; ``limit`` refuses (429) a request that would be the
    ``limit``-th+1 in one second (on ``clock``), as a sliding-window server does."""

    def __init__(
        self,
        *,
        limit: int | None = None,
        hold: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self.sent: list[float] = []
        self.refused = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._limit = limit
        self._accepted: list[float] = []
        # hold: requests wait until this many are in flight at once (or a few seconds pass).
        self._hold = hold
        self._full: anyio.Event | None = None

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        now = self._clock()
        self.sent.append(now)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self._hold is not None:
                if self._full is None:
                    self._full = anyio.Event()
                if self.in_flight >= self._hold:
                    self._full.set()
                with anyio.move_on_after(3):
                    await self._full.wait()
            await anyio.lowlevel.checkpoint()
            if self._limit is not None:
                recent = [t for t in self._accepted if t > now - 1.0]
                if len(recent) >= self._limit:
                    self.refused += 1
                    message = orjson.dumps({"message": "Rate limit exceeded."})
                    return Response(429, {"Retry-After": "0.2"}, message)
                self._accepted.append(now)
            return Response(200, {}, _ANSWER)
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        pass


def test_http_concurrency_is_each_actors_requests_in_flight() -> None:
    """``HttpConfig(concurrency=20)`` means 20 requests in flight per actor (it ran at 16)."""
    transport = MemoryServer(hold=20)
    classifier = Classifier(
        model="colors/1",
        http=HttpConfig(api_url="https://api.example", api_key="k", concurrency=20),
        transport=transport,
    )
    rows = rows_of(classifier, images(60))
    assert [row["status"] for row in rows] == ["ok"] * 60
    assert transport.max_in_flight == 20


def test_the_rate_is_a_ceiling_that_backs_off_on_429() -> None:
    """``RateConfig(requests_per_second=100)`` against a server that allows 10 a second: the
    first 429s teach the actor the server's limit and it slows below it, as a job does, so
    the next batch meets no 429 (a fixed rate, which the Ray path had, met them again).
    On a virtual clock, the server's one-second window included: no machine is too slow."""
    transport = MemoryServer(limit=10, clock=loop_time)

    async def main() -> tuple[list[dict[str, Any]], int, list[dict[str, Any]]]:
        classifier = Classifier(
            model="colors/1",
            http=HttpConfig(api_url="https://api.example", api_key="k", concurrency=4),
            rate=RateConfig(requests_per_second=100),
            transport=transport,
            clock=loop_time,
        )
        try:
            first = (await classifier(urls(15, "first"))).to_pylist()
            refused_while_learning = transport.refused
            second = (await classifier(urls(8, "second"))).to_pylist()
        finally:
            await classifier.aclose()
        return first, refused_while_learning, second

    first, refused_while_learning, second = run_virtual(main)
    assert {row["status"] for row in first + second} == {"ok"}
    assert refused_while_learning > 0  # the server's limit was met
    assert transport.refused == refused_while_learning  # and not met again
    # 429s cost no image its retries: each was sent again until answered.
    assert sum(row["attempts"] for row in first + second) == len(transport.sent)


def test_the_rate_is_the_whole_jobs_split_over_the_actors() -> None:
    """40 requests a second over 4 actors: one actor sends 10 a second, so its 6 requests
    span at least 5 intervals of 0.1 s (at 40 a second they would span 0.125 s)."""
    transport = MemoryServer()
    classifier = Classifier(
        model="colors/1",
        http=HttpConfig(api_url="https://api.example", api_key="k"),
        rate=RateConfig(requests_per_second=40),
        actors=4,
        transport=transport,
    )
    rows = rows_of(classifier, images(6))
    assert {row["status"] for row in rows} == {"ok"}
    assert transport.sent[-1] - transport.sent[0] >= 0.45


def test_an_image_out_of_retries_is_a_row_that_counts_requests(
    server: BackgroundServer,
) -> None:
    """5xx and 429 answers are retried; an image out of retries is an error row whose message
    says "requests", as the job's does (it said "attempts")."""
    doomed = png("white", side=9)
    server.fail_image(doomed, 503)
    server.fail_next(4, 429, {"Retry-After": "0"})
    batch = images(12)
    batch["bytes"].append(doomed)
    batch["id"].append("doomed")
    retry = RetryConfig(retries=2, backoff_base=0.01, backoff_max=0.05)
    classifier = Classifier(model="colors/1", http=http(server), retry=retry)

    rows = {row["id"]: row for row in rows_of(classifier, batch)}

    colors = ["red", "green", "blue", "yellow"]
    assert {f"img-{n}": rows[f"img-{n}"]["top"] for n in range(12)} == {
        f"img-{n}": colors[n % 4] for n in range(12)
    }
    assert sum(row["attempts"] for row in rows.values()) == server.stats.requests
    assert rows["doomed"]["error_type"] == "server_error"
    assert rows["doomed"]["attempts"] == 3
    assert rows["doomed"]["error"].startswith("HTTP 503: ")
    assert rows["doomed"]["error"].endswith(" (gave up after 3 requests)")


def test_a_rejected_key_stops_the_actor_sending_and_marks_its_rows(
    server: BackgroundServer,
) -> None:
    classifier = Classifier(
        model="colors/1", http=HttpConfig(api_url=server.url, api_key="wrong-key", concurrency=1)
    )
    rows = rows_of(classifier, images(10), images(5, "later"))
    assert len(rows) == 15
    assert {row["error_type"] for row in rows} == {"fatal"}
    assert all("API key" in row["error"] and "wrong-key" not in row["error"] for row in rows)
    assert server.stats.requests == 1  # the rest were not sent
    assert [row["attempts"] for row in rows].count(1) == 1


def test_the_key_comes_from_the_actors_environment(
    server: BackgroundServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipe that keeps the key out of Ray's files: the actor reads
    ``$ROBOFLOW_API_KEY`` from its own environment when it is made."""
    monkeypatch.setenv("ROBOFLOW_API_KEY", KEY)
    classifier = Classifier(model="colors/1", http=HttpConfig(api_url=server.url))
    rows = rows_of(classifier, images(3))
    assert {row["status"] for row in rows} == {"ok"}


def test_paths_urls_and_bad_rows_are_rows_never_a_lost_block(
    make_server: Callable[..., BackgroundServer], tmp_path: Path
) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(png("green"))
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "blue.png").write_bytes(png("blue"))
    server = make_server(files_dir=tmp_path / "served")
    url = f"{server.url}/_files/blue.png"
    batch: dict[str, list[Any]] = {
        "path": [str(image), str(tmp_path / "gone.png"), None, None],
        "url": [None, None, url, None],
        "label": ["x", "y", "z", "w"],
    }

    rows = {
        row["label"]: row for row in rows_of(Classifier(model="colors/1", http=http(server)), batch)
    }

    assert (rows["x"]["id"], rows["x"]["top"]) == (str(image), "green")
    assert rows["y"]["error_type"] == "missing_file"
    assert (rows["z"]["id"], rows["z"]["url"], rows["z"]["top"]) == (url, url, "blue")
    assert rows["w"]["error_type"] == "bad_input" and "no image" in rows["w"]["error"]


def test_a_bytes_column_that_holds_no_bytes_is_a_row() -> None:
    classifier = Classifier(model="colors/1", http=HttpConfig(api_url="http://127.0.0.1:9"))
    (row,) = rows_of(classifier, {"bytes": [42], "id": ["odd"]})
    assert (row["id"], row["error_type"]) == ("odd", "bad_input")
    assert "holds a int value, not image bytes" in row["error"]


def test_settings_ray_cannot_honour_are_refused() -> None:
    with pytest.raises(UsageError, match=r"http\.api_url: give one server"):
        Classifier(model="colors/1", http=HttpConfig(api_url=("http://a:1", "http://b:2")))
    with pytest.raises(UsageError, match="actors: must be at least 1"):
        Classifier(model="colors/1", actors=0)


class OutageServer:
    """An in-memory server that answers every request, except that it is down (connection
    refused) from its ``down_at``-th request for ``down_for`` seconds on ``clock``."""

    def __init__(self, *, down_at: int, down_for: float, clock: Callable[[], float]) -> None:
        self._down_at, self._down_for, self._clock = down_at, down_for, clock
        self.requests = 0
        self.refused = 0
        self.up_again: float | None = None

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        self.requests += 1
        await asyncio.sleep(0.01)  # on the wire: requests overlap, as the server's do
        if self.requests == self._down_at:
            self.up_again = self._clock() + self._down_for
        if self.up_again is not None and self._clock() < self.up_again:
            self.refused += 1
            raise RetryableError(
                "cannot connect to api.example: Connection refused", kind=ErrorType.CONNECTION
            )
        return Response(200, {}, _ANSWER)

    async def aclose(self) -> None:
        pass


def test_an_outage_mid_dataset_leaves_no_error_rows() -> None:
    """The server goes down for a while mid-dataset (connections refused) and comes back: the
    actor pauses and probes, as a job does, instead of spending each image's retries, so
    every row is ok though an image can be sent more often than its retries allow. The
    outage starts at the 20th request of 60, on a virtual clock: it always happens mid-way
    and always lasts past ``outage_after`` and the retries' backoff together."""
    transport = OutageServer(down_at=20, down_for=1.5, clock=loop_time)
    outage = OutageConfig(outage_after=0.3, probe_initial=0.2, probe_max=0.4, max_outage=60)
    retry = RetryConfig(retries=1, backoff_base=0.05, backoff_max=0.1)

    async def main() -> list[dict[str, Any]]:
        classifier = Classifier(
            model="colors/1",
            http=HttpConfig(api_url="https://api.example", api_key="k", concurrency=4),
            retry=retry,
            outage=outage,
            transport=transport,
            clock=loop_time,
        )
        try:
            rows: list[dict[str, Any]] = (await classifier(urls(60))).to_pylist()
            return rows
        finally:
            await classifier.aclose()

    rows = run_virtual(main)

    assert len(rows) == 60
    assert [(row["id"], row["error_type"]) for row in rows if row["status"] != "ok"] == []
    assert transport.refused > 4  # the outage came mid-dataset and outlived the retries
    assert max(row["attempts"] for row in rows) > 2  # waited out, not counted
    assert sum(row["attempts"] for row in rows) == transport.requests
