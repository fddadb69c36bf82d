"""The whole worker loop in memory: a ``Job`` whose HTTP layer is a scripted transport.

No sockets and no server: the fake transport answers each request from a script (a status,
a failure, or a hang), so retries, the give-up rule during an outage, 429s and hedged copies
of a stuck request are exercised through the real runner, sender and attempt policy in well
under a second each. The job runs on virtual time (virtualtime.py): a deadline learned from
answers that take no time, or a 0.2 s watchdog, cannot be met by a request that was merely
slow because the machine was busy. The end-to-end tests against the local server stay the
reference.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import orjson
from yarl import URL

from batchclassify.api.client import Response
from batchclassify.config import HttpConfig, JobConfig, OutageConfig, RetryConfig
from batchclassify.error_types import ErrorType
from batchclassify.errors import RetryableError
from batchclassify.job.runner import Job
from batchclassify.summary import JobSummary

from .conftest import read_rows
from .virtualtime import run_virtual

_ANSWER = orjson.dumps(
    {"top": "red", "confidence": 0.9, "predictions": [{"class": "red", "confidence": 0.9}]}
)

#: What the script returns for one request: an answer, or an exception to raise.
Outcome = Response | Exception
#: The script: (the image URL asked for, how many times it was asked before) -> outcome;
#: ``None`` hangs the request until it is cancelled.
Script = Callable[[str, int], Outcome | None]


def ok() -> Response:
    return Response(200, {}, _ANSWER)


def status(code: int, message: str = "Internal error.", **headers: str) -> Response:
    return Response(code, headers, orjson.dumps({"message": message}))


class FakeTransport:
    """Answers requests from a script; records what it was asked."""

    def __init__(self, script: Script) -> None:
        self._script = script
        self.asked: Counter[str] = Counter()
        self.closed = False

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        image = url.query["image"]
        seen = self.asked[image]
        self.asked[image] += 1
        outcome = self._script(image, seen)
        # A real request takes time (here a virtual millisecond): an answer comes after the
        # request started, never at the same instant as the failures around it.
        await anyio.sleep(0.001)
        if outcome is None:
            await anyio.sleep_forever()
        if isinstance(outcome, Exception):
            raise outcome
        assert outcome is not None
        return outcome

    async def aclose(self) -> None:
        self.closed = True


def _urls(tmp_path: Path, count: int) -> tuple[Path, list[str]]:
    urls = [f"https://images.example/{n:03d}.jpg" for n in range(count)]
    manifest = tmp_path / "urls.txt"
    manifest.write_text("\n".join(urls) + "\n")
    return manifest, urls


def _run(
    tmp_path: Path,
    script: Script,
    *,
    count: int,
    attempts: int = 3,
    concurrency: int = 4,
    outage: OutageConfig | None = None,
    stall_after: float | None = None,
) -> tuple[JobSummary, dict[str, dict[str, Any]], FakeTransport]:
    manifest, _ = _urls(tmp_path, count)
    config = JobConfig(
        sources=(str(manifest),),
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(
            api_url="https://api.example",
            api_key="k",
            concurrency=concurrency,
            timeout=30.0,
            stall_after=stall_after,
        ),
        retry=RetryConfig(retries=attempts - 1, backoff_base=0.01, backoff_max=0.02),
        outage=outage or OutageConfig(),
    )
    transport = FakeTransport(script)

    async def main() -> JobSummary:
        job = Job(config, transport=transport, clock=asyncio.get_running_loop().time)
        return await job.run()

    summary = run_virtual(main)
    rows = {row["id"]: row for row in read_rows(config.output)}
    return summary, rows, transport


def test_failed_requests_are_retried_until_answered(tmp_path: Path) -> None:
    summary, rows, transport = _run(
        tmp_path, lambda _url, seen: status(503) if seen < 2 else ok(), count=6
    )
    assert summary.ok == 6 and summary.failed == 0 and summary.exit_code == 0
    assert {row["attempts"] for row in rows.values()} == {3}
    assert summary.retries == 12
    assert transport.closed  # the client closes its transport at the end


def test_an_item_failing_alone_gives_up_with_its_error_counted_once(tmp_path: Path) -> None:
    bad = "https://images.example/003.jpg"
    summary, rows, transport = _run(
        tmp_path, lambda url, _seen: status(500) if url == bad else ok(), count=8
    )
    assert summary.ok == 7 and summary.failed == 1 and summary.exit_code == 1
    row = rows[bad]
    assert row["status"] == "error" and row["error_type"] == "server_error"
    assert row["http_status"] == 500 and row["attempts"] == 3
    assert row["error"] == "HTTP 500: Internal error. (gave up after 3 requests)"
    assert transport.asked[bad] == 3
    # The summary counts the failure by type and message, not by the row's request count.
    assert summary.errors == Counter({"server_error: HTTP 500: Internal error.": 1})


def test_an_outage_does_not_turn_the_queue_into_error_rows(tmp_path: Path) -> None:
    """Every request fails for a while (connection refused, after the API has answered
    once): the job pauses and probes instead of giving up, though each item is retried more
    often than --retries allows; when the API is back, every item is classified."""
    down = {"requests": 0}

    def script(url: str, seen: int) -> Outcome:
        if url.endswith("/000.jpg") and seen == 0:
            return ok()  # the API answered once: what follows is an outage, not a typo
        down["requests"] += 1
        if down["requests"] <= 60:
            return RetryableError(
                "cannot connect to api.example: refused", kind=ErrorType.CONNECTION
            )
        return ok()

    outage = OutageConfig(outage_after=0.05, probe_initial=0.01, probe_max=0.02, max_outage=60)
    summary, rows, _ = _run(tmp_path, script, count=12, attempts=2, outage=outage)
    assert summary.failed == 0 and summary.ok == 12 and summary.fatal is None
    assert max(row["attempts"] for row in rows.values()) > 2


def test_429s_do_not_use_up_the_retries(tmp_path: Path) -> None:
    def script(_url: str, seen: int) -> Outcome:
        return status(429, "slow down", **{"Retry-After": "0.01"}) if seen < 3 else ok()

    summary, rows, _ = _run(tmp_path, script, count=5, attempts=1)
    assert summary.ok == 5 and summary.failed == 0
    assert summary.rate_limited == 15
    assert {row["attempts"] for row in rows.values()} == {4}


def test_a_stuck_request_is_answered_by_a_copy(tmp_path: Path) -> None:
    """After enough answers to learn the deadline (``HedgePolicy.min_samples``), one request
    hangs: a copy is sent, its answer is the item's, and the job does not wait out the 30 s
    --timeout."""
    stuck = "https://images.example/060.jpg"

    def script(url: str, seen: int) -> Outcome | None:
        return None if url == stuck and seen == 0 else ok()

    summary, rows, transport = _run(tmp_path, script, count=80)
    assert summary.ok == 80 and summary.failed == 0
    assert summary.hedged == 1 and transport.asked[stuck] == 2
    assert rows[stuck]["status"] == "ok" and rows[stuck]["attempts"] == 2


def test_a_stalled_request_cut_by_the_watchdog_is_retried_as_a_timeout(tmp_path: Path) -> None:
    """Nothing completes for ``stall_after`` (no deadline learned yet, so no copy): the
    watchdog cuts the request, which the worker retries like a timeout."""
    first = "https://images.example/000.jpg"

    def script(url: str, seen: int) -> Outcome | None:
        return None if url == first and seen == 0 else ok()

    summary, rows, transport = _run(tmp_path, script, count=3, concurrency=1, stall_after=0.2)
    assert summary.ok == 3 and summary.failed == 0 and summary.hedged == 0
    assert summary.retries == 1 and transport.asked[first] == 2
    assert rows[first]["attempts"] == 2


def test_a_job_collects_garbage_less_often_and_leaves_the_setting_as_it_found_it(
    tmp_path: Path,
) -> None:
    """The job raises the collector's young-generation threshold while it runs (each
    collection walks every request in flight: gctuning.py) and puts the caller's back."""
    import gc

    from batchclassify.job.gctuning import JOB_THRESHOLD

    seen: list[int] = []

    def answer(_url: str, _seen: int) -> Response:
        seen.append(gc.get_threshold()[0])
        return ok()

    before = gc.get_threshold()
    try:
        gc.set_threshold(500, 7, 9)
        summary, rows, _ = _run(tmp_path, answer, count=5)
        assert gc.get_threshold() == (500, 7, 9)
    finally:
        gc.set_threshold(*before)
    assert summary.ok == 5 and len(rows) == 5
    assert seen == [JOB_THRESHOLD] * 5
