"""A fleet with a hung member (issue 19): requests stuck on a server that is out or silent
are sent elsewhere outside the copy budget, and a server out is probed with an image of the
fleet's own, never a user's. The rules are on a fake clock in test_fleet.py; here the fleet's
probes in memory, the budget, and a job over three real local servers."""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from pathlib import Path

import anyio
import orjson
from yarl import URL

from batchclassify import HttpConfig, JobConfig, OutageConfig, classify
from batchclassify.api.client import Response
from batchclassify.api.fleet import PROBE_BODY, FleetTransport
from batchclassify.job.hedging import HedgePolicy
from batchclassify.server import BackgroundServer

from .conftest import KEY, make_images, read_rows


class Bodies:
    """An in-memory server that records the bodies it was sent, answering ``status``."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.bodies: list[bytes] = []
        self._waiting: tuple[int, anyio.Event] | None = None

    async def until(self, count: int) -> None:
        """Return once ``count`` requests have come."""
        if len(self.bodies) < count:
            self._waiting = (count, anyio.Event())
            await self._waiting[1].wait()

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        self.bodies.append(body)
        if self._waiting is not None and len(self.bodies) >= self._waiting[0]:
            self._waiting[1].set()
        await anyio.sleep(0.01)  # requests overlap: each is sent while others are in flight
        return Response(self.status, {}, orjson.dumps({"message": "no"}))

    async def aclose(self) -> None:
        pass


def test_a_server_out_is_probed_with_the_fleets_own_image_never_a_users() -> None:
    failing, fine = Bodies(500), Bodies(200)
    fleet = FleetTransport([("http://a:1", failing), ("http://b:2", fine)], probe_initial=0.01)
    url = URL("http://a:1/colors/1").with_query(api_key="k")

    async def user_request(n: int) -> None:
        await fleet.send(url, b"user-image-%d" % n, {})

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(fleet.watch)
            # Six at once (each is chosen before any is answered): three each, and the failing
            # one is out once all six are answered, whatever the machine's speed.
            async with anyio.create_task_group() as first:
                for n in range(6):
                    first.start_soon(user_request, n)
            for n in range(6, 20):
                await user_request(n)
            await failing.until(5)  # the watch's first rounds: its probes
            group.cancel_scope.cancel()

    anyio.run(main)
    users = [body for body in failing.bodies if body.startswith(b"user-image")]
    assert len(users) == 3 == fleet.snapshot()[0]["requests"]  # probes are not user requests
    assert failing.bodies[:3] == users  # then out (three 500s in a row): probes alone
    assert set(failing.bodies[3:]) == {PROBE_BODY}
    assert len(fine.bodies) == 17 and all(b.startswith(b"user-image") for b in fine.bodies)
    # The probe is a real image, as the client sends images: base64 of a PNG.
    assert base64.b64decode(PROBE_BODY).startswith(b"\x89PNG")


def test_copies_for_a_failed_server_do_not_come_out_of_the_budget() -> None:
    hedge = HedgePolicy(timeout=60)
    for _ in range(50):
        hedge.copy_for_server()
    assert hedge.copies == hedge.server_copies == 50
    # The stragglers' budget is whole: the allowance at the start.
    assert hedge.try_copy() and hedge.try_copy() and not hedge.try_copy()


def test_a_job_over_a_hung_a_failing_and_a_healthy_server_answers_every_image_once(
    tmp_path: Path, make_server: Callable[..., BackgroundServer]
) -> None:
    expected = make_images(tmp_path / "images", 600)
    hung = make_server(hang_rate=1.0)  # takes every request, answers none
    failing = make_server(error_rate=1.0)  # answers every request with a 500
    healthy = make_server(latency=0.01)
    config = JobConfig(
        sources=tmp_path / "images",
        model="colors/1",
        output=tmp_path / "out.jsonl",
        http=HttpConfig(
            api_url=(hung.url, failing.url, healthy.url),
            api_key=KEY,
            concurrency=8,
            timeout=20,
        ),
        outage=OutageConfig(probe_initial=0.2, probe_max=1.0),
    )
    summary = classify(config)
    rows = read_rows(config.output)
    assert summary.failed == 0 and summary.exit_code == 0
    assert [row["status"] for row in rows] == ["ok"] * len(expected)
    # Every image got exactly one row, its answer.
    assert sorted(row["id"] for row in rows) == sorted(expected)
    assert {row["id"]: row["top"] for row in rows} == expected
    by_server = {s["server"]: s for s in summary.servers}
    assert by_server[healthy.url.removeprefix("http://")]["ok"] == len(expected)
    for server in (hung, failing):
        mine = by_server[server.url.removeprefix("http://")]
        assert mine["ok"] == 0
        # What it was sent beyond the fleet's user requests were probes, the fleet's own
        # image: a user's image that went to a server out would be counted as a request.
        probes = server.stats.requests - mine["requests"]
        sent = [record.content_length for record in server.stats.recent]
        assert sent.count(len(PROBE_BODY)) == probes
    # The failing server was out from its first requests on, and probed (probe_initial).
    failing_requests = by_server[failing.url.removeprefix("http://")]["requests"]
    assert failing.stats.requests > failing_requests
