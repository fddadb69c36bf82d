"""--concurrency as a bound (issue 25): requests in flight never exceed ``--concurrency`` plus
``hedging.extra_requests`` (spare workers and copies together), hung requests included; and
a stuck image whose copies stall too is sent again at its own deadline, never left to
``--timeout``. In memory (``Job(transport=...)``): the fake transport hangs scripted requests
and counts what is in flight."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from yarl import URL

from batchclassify.api.client import Response
from batchclassify.config import HttpConfig, JobConfig, RetryConfig
from batchclassify.job.hedging import HedgePolicy, extra_requests
from batchclassify.job.runner import Job
from batchclassify.summary import JobSummary

from .conftest import CliResult, MakeServer, make_images, read_rows, run_args

_ANSWER = orjson.dumps(
    {"top": "red", "confidence": 0.9, "predictions": [{"class": "red", "confidence": 0.9}]}
)
#: (image URL, times it was asked before) -> an answer, an exception, or ``None``: hang.
Script = Callable[[str, int], Response | Exception | None]
#: An --timeout no test may wait for: a job that ends at all did not wait for it.
_NEVER = 3600.0


class CountingTransport:
    """Answers from a script and counts requests in flight, as a server would see them."""

    def __init__(self, script: Script, latency: float) -> None:
        self._script = script
        self._latency = latency
        self.asked: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        image = url.query["image"]
        seen = self.asked[image]
        self.asked[image] += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            outcome = self._script(image, seen)
            await anyio.sleep(self._latency)  # requests overlap, as real ones do
            if outcome is None:
                await anyio.sleep_forever()
            if isinstance(outcome, Exception):
                raise outcome
            assert outcome is not None
            return outcome
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        pass


def _url(n: int) -> str:
    return f"https://images.example/{n:03d}.jpg"


def _run(
    tmp_path: Path,
    script: Script,
    *,
    count: int,
    concurrency: int,
    retries: int = 3,
    latency: float = 0.001,
) -> tuple[JobSummary, dict[str, dict[str, Any]], CountingTransport]:
    manifest = tmp_path / "urls.txt"
    manifest.write_text("".join(_url(n) + "\n" for n in range(count)))
    config = JobConfig(
        sources=(str(manifest),),
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(
            api_url="https://api.example", api_key="k", concurrency=concurrency, timeout=_NEVER
        ),
        retry=RetryConfig(retries=retries, backoff_base=0.01, backoff_max=0.02),
    )
    transport = CountingTransport(script, latency)
    summary = anyio.run(Job(config, transport=transport).run)
    return summary, {row["id"]: row for row in read_rows(config.output)}, transport


def _ok() -> Response:
    return Response(200, {}, _ANSWER)


def test_the_extra_allowance_is_an_eighth_of_concurrency_and_at_least_two() -> None:
    assert [extra_requests(n) for n in (1, 8, 16, 32, 128, 4096)] == [2, 2, 2, 4, 16, 512]


@pytest.mark.parametrize("concurrency", [4, 16])
def test_hung_requests_never_take_requests_in_flight_past_the_bound(
    tmp_path: Path, concurrency: int
) -> None:
    """Eight images close together hang on their first request (1.3% of the job), once the
    deadline is learned, while the rest of the job keeps the workers busy: spare workers and
    copies took the requests in flight well past the bound. Every image still ends ok."""
    hung = {_url(n) for n in range(100, 180, 10)}

    def script(url: str, seen: int) -> Response | None:
        return None if url in hung and seen == 0 else _ok()

    summary, rows, transport = _run(
        tmp_path, script, count=600, concurrency=concurrency, latency=0.01
    )

    assert summary.ok == 600 and summary.failed == 0
    assert all(rows[url]["status"] == "ok" for url in hung)
    assert transport.max_in_flight <= concurrency + extra_requests(concurrency)
    assert transport.max_in_flight >= concurrency  # the bound is reached, not undershot


def test_a_copy_that_hangs_too_gets_a_further_copy(tmp_path: Path) -> None:
    stuck = _url(70)

    def script(url: str, seen: int) -> Response | None:
        return None if url == stuck and seen < 2 else _ok()  # the original and first copy

    summary, rows, transport = _run(tmp_path, script, count=90, concurrency=4)

    assert summary.ok == 90 and summary.failed == 0
    assert rows[stuck]["status"] == "ok" and transport.asked[stuck] == 3
    assert summary.hedged == 2 and summary.retries == 0


def test_an_image_whose_copies_all_hang_is_sent_again_at_its_own_deadline(
    tmp_path: Path,
) -> None:
    """The original and both copies hang: once the last copy has had a deadline of its own
    and twice that passed, the image is retried (a timeout) instead of waiting --timeout."""
    stuck = _url(70)

    def script(url: str, seen: int) -> Response | None:
        return None if url == stuck and seen <= HedgePolicy.max_copies else _ok()

    summary, rows, transport = _run(tmp_path, script, count=90, concurrency=4)

    assert summary.ok == 90 and summary.failed == 0
    assert rows[stuck]["status"] == "ok"
    assert transport.asked[stuck] == HedgePolicy.max_copies + 2  # three hung, the retry
    assert summary.retries == 1


def test_a_hung_request_whose_copy_fails_is_not_left_to_the_timeout(tmp_path: Path) -> None:
    """The copy fails at once (a 503): the original, still hung, gets another copy."""
    stuck = _url(70)

    def script(url: str, seen: int) -> Response | None:
        if url == stuck and seen == 0:
            return None
        if url == stuck and seen == 1:
            return Response(503, {}, orjson.dumps({"message": "Internal error."}))
        return _ok()

    summary, rows, transport = _run(tmp_path, script, count=90, concurrency=4)

    assert summary.ok == 90 and summary.failed == 0
    assert rows[stuck]["status"] == "ok" and transport.asked[stuck] == 3


def test_copies_are_not_sent_when_the_extra_places_are_taken(tmp_path: Path) -> None:
    """Both workers' images hang, twice each (-c 2, so two extra places, both taken by spare
    workers): no more than four requests are ever out; each image ends ok, retried at its
    deadline instead of copied."""
    hung = {_url(60), _url(61)}

    def script(url: str, seen: int) -> Response | None:
        return None if url in hung and seen < 2 else _ok()

    summary, rows, transport = _run(tmp_path, script, count=200, concurrency=2)

    assert summary.ok == 200 and summary.failed == 0
    assert all(rows[url]["status"] == "ok" for url in hung)
    assert transport.max_in_flight <= 2 + extra_requests(2)


def test_the_local_server_never_sees_more_than_the_bound(
    tmp_path: Path, make_server: MakeServer, cli: Callable[..., CliResult]
) -> None:
    """Against the real client and server: 1% of requests hang (for an hour); the server's
    own count of requests in flight stays within -c 4 plus the extra allowance, and every
    image ends ok without waiting the --timeout."""
    server = make_server(latency=0.005, hang_rate=0.01, seed=7)
    make_images(tmp_path / "in", 300)
    output = tmp_path / "out.jsonl"

    result = cli(*run_args(server, output, tmp_path / "in"), "-c", "4", "--timeout", "3600")

    assert result.code == 0, result.err
    rows = read_rows(output)
    assert len(rows) == 300 and all(row["status"] == "ok" for row in rows)
    assert server.stats.hangs >= 1
    assert server.stats.max_in_flight <= 4 + extra_requests(4)
