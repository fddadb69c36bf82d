"""An outage's first seconds cost no image its answer (issue 19): the failures before an
outage is declared are counted back once it is (attempts.py, judged after the fact).

The rule itself, to the second, is on a fake clock in test_attempt_policy.py
(``test_an_outages_first_seconds_cost_no_item_its_retries``). Here one job over real sockets
asserts outcomes only, with margins a busy machine cannot eat: the server goes down after a
set request (the ones after it are held, so the job cannot finish first) for several times
``outage_after``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from batchclassify import HttpConfig, JobConfig, OutageConfig, RetryConfig, classify
from batchclassify.server import BackgroundServer, Fault

from .conftest import KEY, make_images, read_rows

#: Requests answered before the server goes down, and for how long it is down (six times
#: ``outage_after``: the outage is declared whatever the machine's speed).
DOWN_AFTER = 200
DOWN_FOR = 3.0
#: Requests in flight when it goes down: one per worker, held until then.
CONCURRENCY = 8


def _down_mid_job(server: BackgroundServer) -> Callable[[], None]:
    def control() -> None:
        deadline = time.monotonic() + 60
        held = DOWN_AFTER + CONCURRENCY  # every worker waits on a held answer: the job too
        while server.stats.requests < held and time.monotonic() < deadline:
            time.sleep(0.002)
        server.set_down(True)  # refused connections, requests in flight cut
        time.sleep(DOWN_FOR)
        server.set_down(False)

    return control


def test_a_server_down_for_seconds_mid_job_leaves_no_error_row(
    tmp_path: Path, make_server: Callable[..., BackgroundServer]
) -> None:
    expected = make_images(tmp_path / "images", 400)
    server = make_server(latency=0.01)
    # Just before the outage, one request in four is a 503 "model loading" with
    # Retry-After: 1 (as the real servers send it): the images that met one are waiting to
    # be sent again as the server goes down, then spend their retries in the seconds before
    # the outage is declared. No image meets more than two 503s (its budget: 6 requests).
    late = [Fault(status=503) if n % 4 == 3 else 200 for n in range(40)]
    # Then one request per worker held, far past the time the controller needs to see them
    # come: set_down cuts them, so the job is always mid-way when the server goes down.
    held = [Fault(delay=120)] * CONCURRENCY
    server.script(*[200] * (DOWN_AFTER - len(late)), *late, *held)
    controller = threading.Thread(target=_down_mid_job(server))
    controller.start()
    config = JobConfig(
        sources=tmp_path / "images",
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(api_url=server.url, api_key=KEY, concurrency=CONCURRENCY, timeout=60),
        retry=RetryConfig(backoff_base=0.05, backoff_max=0.5),
        outage=OutageConfig(outage_after=0.5, probe_initial=0.5, probe_max=1.0),
    )
    try:
        summary = classify(config)
    finally:
        controller.join()
    rows = read_rows(config.output)
    errors = [row for row in rows if row["status"] != "ok"]
    assert errors == [], errors[:3]
    assert summary.failed == 0 and summary.exit_code == 0
    # Every image got exactly one row, its answer.
    assert sorted(row["id"] for row in rows) == sorted(expected)
    assert {row["id"]: row["top"] for row in rows} == expected
    # The outage happened mid-job (the held requests were cut: never answered), and images
    # were retried through it.
    assert server.stats.statuses[503] == 10 and summary.retries > 0
    assert server.stats.requests - sum(server.stats.statuses.values()) >= CONCURRENCY
