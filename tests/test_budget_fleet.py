"""``--max-credits`` over a fleet with a hung member: copies of the requests stuck on it, the
requests it swallowed and the probes it was sent all count, so what the fleet may have run
never passes the cap (the run's real runner, in-memory servers)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import anyio
import orjson
import pytest
from yarl import URL

from batchclassify.api.client import Response
from batchclassify.api.fleet import FleetTransport
from batchclassify.config import HttpConfig, JobConfig
from batchclassify.job.runner import Job

from .conftest import read_rows

_ANSWER = orjson.dumps(
    {"top": "red", "confidence": 0.9, "predictions": [{"class": "red", "confidence": 0.9}]}
)
_PRICE = 1 / 1000  # hosted-v1: a fixed price per image


class _Hung:
    """Takes every request and answers none: each may have been run, and billed."""

    def __init__(self) -> None:
        self.taken = 0

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        self.taken += 1
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        pass


class _Answering:
    """Answers every request after a short wait; counts what it billed."""

    def __init__(self) -> None:
        self.billed = 0

    async def send(self, url: URL, body: bytes, headers: Mapping[str, str]) -> Response:
        await anyio.sleep(0.002)
        self.billed += 1
        return Response(200, {}, _ANSWER)

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("cap", [0.08, 0.12])
def test_a_hung_fleet_member_never_takes_spend_past_the_cap(tmp_path: Path, cap: float) -> None:
    manifest = tmp_path / "urls.txt"
    manifest.write_text("".join(f"https://images.example/{n}.jpg\n" for n in range(400)))
    hung, answering = _Hung(), _Answering()
    fleet = FleetTransport(
        [("https://a.example", hung), ("https://b.example", answering)],
        probe_initial=0.05,
        probe_max=0.1,
        silent_after=lambda: 0.3,
        suspect_after=lambda: 0.05,
    )
    config = JobConfig(
        sources=(str(manifest),),
        model="colors/1",
        output=tmp_path / "out.jsonl",
        max_credits=cap,
        billing="hosted-v1",
        http=HttpConfig(
            api_url=("https://a.example", "https://b.example"),
            api_key="k",
            concurrency=8,
            timeout=1,
            stall_after=1,  # the hung requests nobody copies: cut soon, not at 3x timeout
        ),
    )
    summary = anyio.run(Job(config, transport=fleet).run)

    assert hung.taken > 0  # the hung server swallowed requests (and probes)
    # Everything the fleet may have run and billed: the answers, and what the hung one took.
    reckoned = (answering.billed + hung.taken) * _PRICE
    assert reckoned <= cap + 1e-9
    assert summary.budget_spent == pytest.approx(reckoned)
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(rows) <= answering.billed  # every row is an answer, each paid for once
