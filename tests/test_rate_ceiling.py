"""--rate-limit is a ceiling (issue 9): above the server's real limit the job still backs off on
429, on a fake clock and against the local server's sliding-window limit."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio

from batchclassify.job.ratelimit import RateController
from batchclassify.server import BackgroundServer

from .conftest import CliResult, make_images, read_rows
from .test_flow_control import FakeClock


def _simulate(
    controller: RateController, clock: FakeClock, *, server_limit: int, seconds: float
) -> tuple[list[float], int, int]:
    """A fast server allowing ``server_limit`` requests in any one second; the client's
    requests as the controller lets them start. Returns accepted starts, 429s, requests."""
    accepted: list[float] = []
    rejected = 0
    total = 0

    async def main() -> None:
        nonlocal rejected, total
        end = clock.now + seconds
        while clock.now < end:
            await controller.acquire()
            total += 1
            recent = [t for t in accepted[-2 * server_limit :] if t > clock.now - 1.0]
            if len(recent) >= server_limit:
                rejected += 1
                controller.on_rate_limited(retry_after=1.0)
            else:
                accepted.append(clock.now)
                controller.on_success()
            clock.now += 0.001

    anyio.run(main)
    return accepted, rejected, total


def _most_in_one_second(starts: list[float]) -> int:
    return max(sum(1 for t in starts[i:] if t < s + 1.0) for i, s in enumerate(starts))


def test_a_ceiling_above_the_servers_limit_backs_off_on_429() -> None:
    """--rate-limit 100 against a server allowing 20/s: few 429s, the server's limit used."""
    clock = FakeClock()
    controller = RateController(rate=100, clock=clock, sleep=clock.sleep)

    accepted, rejected, total = _simulate(controller, clock, server_limit=20, seconds=120)

    steady = [t for t in accepted if t > accepted[0] + 20]
    achieved = len(steady) / (steady[-1] - steady[0])
    assert achieved >= 0.9 * 20, achieved
    assert rejected / total < 0.05, (rejected, total)
    assert controller.rate is not None and controller.rate < 20


def test_a_ceiling_below_the_servers_limit_is_kept_and_never_exceeded() -> None:
    """--rate-limit 20 against a server allowing 30/s: exactly the ceiling, never above."""
    clock = FakeClock()
    controller = RateController(rate=20, clock=clock, sleep=clock.sleep)

    accepted, rejected, _ = _simulate(controller, clock, server_limit=30, seconds=30)

    assert rejected == 0
    assert _most_in_one_second(accepted) <= 20
    assert len(accepted) >= 20 * 30 - 1
    assert controller.rate == 20


def test_after_backing_off_the_rate_climbs_back_to_the_ceiling_but_not_above() -> None:
    """A 429 cuts the rate below the ceiling; with no more 429s it recovers to the ceiling."""
    clock = FakeClock()
    controller = RateController(rate=10, clock=clock, sleep=clock.sleep)
    _simulate(controller, clock, server_limit=1000, seconds=3)  # successes to measure from
    controller.on_rate_limited(retry_after=1.0)
    clock.now += 1.0
    controller.try_acquire()
    assert controller.rate is not None and controller.rate < 10

    accepted, rejected, _ = _simulate(controller, clock, server_limit=1000, seconds=120)

    assert rejected == 0
    assert controller.rate == 10
    assert _most_in_one_second(accepted) <= 10


def test_adaptive_false_keeps_a_fixed_rate() -> None:
    clock = FakeClock()
    controller = RateController(rate=50, adaptive=False, clock=clock, sleep=clock.sleep)
    _simulate(controller, clock, server_limit=20, seconds=5)
    assert controller.rate == 50


def test_rate_limit_above_the_servers_limit_end_to_end(
    tmp_path: Path,
    make_server: Callable[..., BackgroundServer],
    cli: Callable[..., CliResult],
) -> None:
    """The issue's case over real sockets: --rate-limit 30 against a server allowing 20
    req/s. Every image ends ok and the summary counts the 429s the server sent. (That the
    limit is learned from one round of them is judged on virtual time, not by a loaded
    machine's clock: test_flow_on_virtual_time.py.)"""
    server = make_server(rate_limit=20, history_size=10_000)
    make_images(tmp_path / "in", 40)
    output = tmp_path / "out.jsonl"

    result = cli(
        "run", tmp_path / "in", "-m", "colors/1", "--api-url", server.url, "-o", output,
        "--rate-limit", "30",
    )  # fmt: skip

    assert result.code == 0, result.err
    rows = read_rows(output)
    assert len(rows) == 40 and all(row["status"] == "ok" for row in rows)
    assert server.stats.statuses[200] == 40
    refused = server.stats.statuses[429]  # some, unless the machine was too busy for 20/s
    assert (f"{refused} answered 429" in result.err) == (refused > 0)
