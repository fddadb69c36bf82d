"""Rates, pauses, outages, timeouts, the watchdog and hedging, judged on virtual time.

Each test runs a whole ``Job`` (runner, workers, attempt policy, rate controller, outage
monitor, watchdog, hedging, sink) over ``MemoryApi``, the local server's knobs in memory, on
``VirtualTimeLoop`` (virtualtime.py): the clock only moves when every task waits, so what a
test measures is the job's behaviour, not how busy the machine is. "No more than 20 in any
second" and "cut after 0.6 s" hold exactly, on an idle laptop and on a 2-core CI box running
two suites. The same behaviours over real sockets, asserting outcomes only, are in
test_robustness.py, test_hung_requests.py and test_rate_ceiling.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchclassify.config import HttpConfig, JobConfig, OutageConfig, RateConfig, RetryConfig
from batchclassify.job.hedging import HedgePolicy
from batchclassify.job.ratelimit import SentWindow
from batchclassify.job.runner import FLUSH_INTERVAL, Job
from batchclassify.server import Fault
from batchclassify.summary import JobSummary

from .conftest import read_rows, rows_by_id
from .test_resume import on_disk
from .test_robustness import Recorder
from .virtualtime import MemoryApi, loop_time, most_in_one_second, run_virtual

COLORS = ("red", "green", "blue", "yellow")
#: Retries scaled down, as in test_robustness.py.
FAST_RETRY = RetryConfig(retries=2, backoff_base=0.05, backoff_max=0.2)
FAST_OUTAGE = OutageConfig(outage_after=0.3, probe_initial=0.2, probe_max=0.4, max_outage=30)


def manifest(tmp_path: Path, count: int, *, name: str = "urls.txt") -> Path:
    """``count`` image URLs, one a line; ``MemoryApi`` answers each with its colour."""
    path = tmp_path / name
    path.write_text("".join(image(n) + "\n" for n in range(count)))
    return path


def image(n: int) -> str:
    return f"https://images.example/{n:04d}-{COLORS[n % len(COLORS)]}.jpg"


def job_config(tmp_path: Path, source: Path, **changes: Any) -> JobConfig:
    http = changes.pop("http", {})
    return JobConfig(
        sources=(str(source),),
        model="colors/1",
        output=changes.pop("output", tmp_path / "out.jsonl"),
        http=HttpConfig(api_url="https://api.example", api_key="k", **http),
        **changes,
    )


def run(
    config: JobConfig,
    api: MemoryApi,
    progress: Recorder | None = None,
    *,
    during: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> JobSummary:
    """The job (and ``during`` beside it) on virtual time; a job still running after ten
    virtual minutes has hung."""
    result: list[JobSummary] = []

    async def main() -> None:
        job = Job(config, progress=progress, transport=api, clock=asyncio.get_running_loop().time)
        with anyio.fail_after(600):
            async with anyio.create_task_group() as group:
                if during is not None:
                    group.start_soon(during)
                result.append(await job.run())

    run_virtual(main)
    return result[0]


def all_ok(config: JobConfig, count: int) -> dict[str, dict[str, Any]]:
    """Every image has exactly one row, ok, with its colour."""
    rows = rows_by_id(config.output)
    assert {item: row["top"] for item, row in rows.items()} == {
        image(n): COLORS[n % len(COLORS)] for n in range(count)
    }
    assert {row["status"] for row in rows.values()} == {"ok"}
    return rows


# -- the rate ---------------------------------------------------------------------------------


def test_the_adaptive_rate_finds_the_servers_limit_and_uses_it(tmp_path: Path) -> None:
    """A server allowing 40 req/s answering in 0.1 s, the default 32 workers, no
    --rate-limit: the job finds the limit and uses >= 90 % of it with < 5 % 429s once
    settled; finding it costs one burst of 429s, at most one per worker."""
    api = MemoryApi(rate_limit=40, latency=0.1)
    config = job_config(tmp_path, manifest(tmp_path, 220))

    summary = run(config, api)

    assert summary.exit_code == 0 and summary.ok == 220
    all_ok(config, 220)
    first, last = api.arrivals[0].at, api.arrivals[-1].at
    # Settled: after the first 429s, their pause and the climb back (about 2.5 s).
    steady = [a for a in api.arrivals if first + 2.5 <= a.at <= last - 0.2]
    achieved = sum(1 for a in steady if a.outcome == 200) / (last - 0.2 - (first + 2.5))
    assert achieved >= 0.9 * 40, achieved
    assert sum(1 for a in steady if a.outcome == 429) / len(steady) < 0.05
    assert api.count(429) <= config.http.concurrency + 8
    assert summary.rate_limited == api.count(429)


@pytest.mark.parametrize("latency", [0.0, 0.05, 0.4])
def test_a_fixed_rate_limit_is_never_exceeded_in_any_second_and_is_used(
    tmp_path: Path, latency: float
) -> None:
    """--rate-limit 20 against a server allowing 20 in any one second: not one 429, never
    more than 20 starts in a second, and the limit used: 50 requests take 49 slots of 1/20 s,
    plus, for answers slower than the first slots, the first second's allowance for
    requests that reach the server late (``SentWindow.first_answer_cap``)."""
    api = MemoryApi(rate_limit=20, latency=latency)
    config = job_config(tmp_path, manifest(tmp_path, 50), rate=RateConfig(requests_per_second=20))

    summary = run(config, api)

    assert summary.exit_code == 0 and summary.rate_limited == 0
    all_ok(config, 50)
    assert api.count(429) == 0
    starts = api.times()
    assert len(starts) == 50 and most_in_one_second(starts) <= 20
    print(f"latency {latency}: 50 starts over {starts[-1] - starts[0]:.3f} s")
    assert 49 / 20 <= starts[-1] - starts[0] <= 49 / 20 + SentWindow.first_answer_cap + 0.02


def test_a_ceiling_above_the_servers_limit_is_learned_from_one_round_of_429s(
    tmp_path: Path,
) -> None:
    """--rate-limit 30 against a server allowing 20/s: the limit is measured from the first
    429 and kept under (before: back to 30/s after every pause, a round of 429s every 1.5 s)."""
    api = MemoryApi(rate_limit=20)
    config = job_config(tmp_path, manifest(tmp_path, 100), rate=RateConfig(requests_per_second=30))

    summary = run(config, api)

    assert summary.exit_code == 0
    all_ok(config, 100)
    assert 1 <= api.count(429) <= 2 and summary.rate_limited == api.count(429)


# -- Retry-After ------------------------------------------------------------------------------


@pytest.mark.parametrize(("retry_after", "pause"), [("1", 1.0), ("0.3", 0.3)])
def test_retry_after_pauses_new_requests_but_not_those_in_flight(
    tmp_path: Path, retry_after: str, pause: float
) -> None:
    """The first answer is a 429: no request starts until its Retry-After has passed, the
    first starts when it has, and the three sent with it finish meanwhile."""
    api = MemoryApi(latency=0.15)
    api.script(Fault(status=429, headers={"Retry-After": retry_after}))
    progress = Recorder(clock=loop_time)
    config = job_config(tmp_path, manifest(tmp_path, 12), http={"concurrency": 4})

    summary = run(config, progress=progress, api=api)

    assert summary.exit_code == 0 and summary.ok == 12 and summary.rate_limited == 1
    all_ok(config, 12)
    [refused] = api.times(429)
    first_wave = [a for a in api.arrivals if a.at < refused + 0.01]
    later = [a.at - refused for a in api.arrivals if a not in first_wave]
    assert len(first_wave) == 4
    assert min(later) == pytest.approx(pause, abs=0.002)  # paused until then, not longer
    answered = [moment for moment, _ in progress.rows]
    assert sum(1 for moment in answered if moment < refused + pause) == 3


# -- outages ------------------------------------------------------------------------------------


def test_server_down_mid_job_pauses_probes_and_resumes(tmp_path: Path) -> None:
    """Connection refused for 1.5 s mid-job: no item fails (3 attempts each; the outage would
    eat them many times over), nothing is answered while down, the bar says so, then the job
    carries on."""
    api = MemoryApi(latency=0.1)
    progress = Recorder(clock=loop_time)
    config = job_config(
        tmp_path,
        manifest(tmp_path, 60),
        http={"concurrency": 4},
        retry=FAST_RETRY,
        outage=FAST_OUTAGE,
    )
    outage: list[float] = []

    async def outage_after_ten_rows() -> None:
        await progress.wait_for_rows(10)
        api.down = True
        outage.append(loop_time())
        await anyio.sleep(1.5)
        api.down = False
        outage.append(loop_time())

    summary = run(config, api, progress, during=outage_after_ten_rows)

    assert summary.exit_code == 0, summary.errors
    all_ok(config, 60)
    down_at, up_at = outage
    # Only the requests already in flight (answered within the latency) end while it is down.
    assert not [t for t, _ in progress.rows if down_at + 0.1 + 0.01 < t < up_at]
    assert api.count("refused") >= 4
    notes = progress.texts()
    assert any(n.startswith("API unavailable, retrying in") and "cannot connect" in n
               for n in notes), notes  # fmt: skip
    assert progress.notes[-1][1] is None  # cleared once the API answered again


def test_api_failing_every_request_is_probed_with_single_requests(tmp_path: Path) -> None:
    """Every answer a 500 for 1.5 s: after outage_after, one probe at a time on a growing
    interval instead of 8 workers hammering; every item ends ok once the API is back."""
    api = MemoryApi(latency=0.02)
    progress = Recorder(clock=loop_time)
    config = job_config(
        tmp_path,
        manifest(tmp_path, 40),
        http={"concurrency": 8},
        retry=FAST_RETRY,
        outage=FAST_OUTAGE,
    )
    window: list[float] = []

    async def failing_for_a_while() -> None:
        await progress.wait_for_rows(5)
        api.fail_next(100_000, 500)
        window.append(loop_time())
        await anyio.sleep(1.5)
        api.clear_faults()
        window.append(loop_time())

    summary = run(config, api, progress, during=failing_for_a_while)

    assert summary.exit_code == 0, summary.errors
    all_ok(config, 40)
    refused = api.times(500)
    assert len(refused) >= 8  # every worker met it before the outage was called
    outage_notes = [(t, n) for t, n in progress.notes if n and n.startswith("API unavailable")]
    called_at = outage_notes[0][0]
    assert all("HTTP 500" in note for _, note in outage_notes)
    assert window[0] + 0.3 <= called_at <= window[0] + 0.3 + 0.1  # after outage_after
    # From then on, probes only: one request at a time, 0.2 s after the call, then every
    # 0.4 s (the interval doubles up to probe_max), until the one that is answered.
    probes = [t for t in refused if t > called_at]
    gaps = [b - a for a, b in zip([called_at, *probes], probes, strict=False)]
    assert gaps == pytest.approx([0.2] + [0.4] * (len(probes) - 1), abs=0.005)
    assert called_at + 0.2 + 0.4 * (len(probes) - 1) < window[1]


def test_an_outage_longer_than_max_outage_stops_resumably(tmp_path: Path) -> None:
    """Down from the start for longer than --max-outage (0.8 s): exit 3 soon after it, no
    row written (all of it left to resume); the same job once the API is back does it all."""
    api = MemoryApi()
    api.down = True
    config = job_config(
        tmp_path,
        manifest(tmp_path, 20),
        http={"concurrency": 4},
        retry=FAST_RETRY,
        outage=OutageConfig(outage_after=0.2, probe_initial=0.1, probe_max=0.2, max_outage=0.8),
    )

    summary = run(config, api)

    assert summary.exit_code == 3
    assert summary.fatal is not None and "unavailable for 0.8 s" in summary.fatal
    assert "rerun the same command to resume" in summary.fatal
    assert summary.elapsed < 0.8 + 0.2 + 0.2 + 0.05  # the limit, the outage call, one probe
    assert read_rows(config.output) == []

    api.down = False
    summary = run(config, api)
    assert summary.exit_code == 0 and summary.ok == 20
    all_ok(config, 20)


# -- timeouts, the watchdog, hedging ------------------------------------------------------------


def test_hung_and_dropped_requests_time_out_and_are_retried(tmp_path: Path) -> None:
    """Two requests hang until the 0.5 s timeout, one is dropped: each is sent once more, and
    the job ends in about the timeout, not the hang's length."""
    api = MemoryApi(timeout=0.5)
    api.script("hang", "drop", "hang")
    config = job_config(
        tmp_path, manifest(tmp_path, 10), http={"concurrency": 4, "timeout": 0.5}, retry=FAST_RETRY
    )

    summary = run(config, api)

    assert summary.exit_code == 0 and summary.retries == 3
    rows = all_ok(config, 10)
    assert sorted(row["attempts"] for row in rows.values()) == [1] * 7 + [2] * 3
    assert api.count("hang") == 2 and api.count("drop") == 1
    assert summary.elapsed < 0.5 + 0.2 + 0.1


def test_watchdog_cancels_requests_stuck_past_their_timeout(tmp_path: Path) -> None:
    """Requests stuck beyond any timeout (here: a 30 s timeout, as if it never fired) are
    cut once nothing has completed for ``stall_after``, reported on the bar, and retried."""
    api = MemoryApi(timeout=30)
    api.script("hang", "hang")
    progress = Recorder(clock=loop_time)
    config = job_config(
        tmp_path,
        manifest(tmp_path, 6),
        http={"concurrency": 2, "timeout": 30, "stall_after": 0.6},
        retry=FAST_RETRY,
    )

    summary = run(config, api, progress)

    assert summary.exit_code == 0 and summary.retries == 2
    rows = all_ok(config, 6)
    assert sorted(row["attempts"] for row in rows.values()) == [1, 1, 1, 1, 2, 2]
    [(cut_at, note)] = [(t, n) for t, n in progress.notes if n is not None]
    assert note.startswith("no request has completed for ") and "retrying the 2 stuck" in note
    assert 0.6 <= cut_at - api.arrivals[0].at <= 0.6 + 1.0  # stall_after, at the next check
    assert progress.notes[-1][1] is None  # cleared by the next answer
    assert summary.elapsed < 3  # not the 30 s timeout


def test_watchdog_leaves_slow_requests_alone(tmp_path: Path) -> None:
    """Every answer takes 0.25 s against a 0.4 s stall_after, one worker: answers keep
    completing, so nothing is cut and nothing is said."""
    api = MemoryApi(latency=0.25)
    progress = Recorder(clock=loop_time)
    config = job_config(
        tmp_path, manifest(tmp_path, 8), http={"concurrency": 1, "stall_after": 0.4}
    )

    summary = run(config, api, progress)

    assert summary.exit_code == 0 and summary.retries == 0 and summary.hedged == 0
    all_ok(config, 8)
    assert progress.texts() == []


def test_a_request_that_keeps_hanging_stops_holding_its_place(tmp_path: Path) -> None:
    """One worker (-c 1) and an image the server never answers, after 60 answers to learn
    the deadline from: the other images are done while it waits (a spare worker took its
    place), the bar says it is stuck, copies stop at two, it ends as a timeout row."""
    api = MemoryApi(timeout=2.0, latency=0.01)
    hung = "https://images.example/hung-blue.jpg"
    api.fail_image(hung, "hang")
    source = tmp_path / "urls.txt"
    source.write_text("".join(f"{url}\n" for url in [*map(image, range(60)), hung,
                                                       *map(image, range(60, 80))]))  # fmt: skip
    progress = Recorder(clock=loop_time)
    config = job_config(
        tmp_path, source, http={"concurrency": 1, "timeout": 2.0}, retry=RetryConfig(retries=0)
    )

    summary = run(config, api, progress)

    rows = read_rows(config.output)
    assert [row["status"] for row in rows] == ["ok"] * 80 + ["error"]
    assert rows[-1]["id"] == hung and rows[-1]["error_type"] == "timeout"
    assert summary.hedged == HedgePolicy.max_copies
    assert api.count("hang") == 1 + HedgePolicy.max_copies
    assert any("with no answer after" in text for text in progress.texts())


# -- what a kill -9 can lose ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_rows_reach_the_disk_within_the_flush_interval(tmp_path: Path, fmt: str) -> None:
    """What kill -9 may lose: a row made longer ago than ``FLUSH_INTERVAL`` (0.5 s) is on
    disk (written to the file, where a killed process leaves it), at any moment of a job
    whose answers come slowly enough that no buffer fills up. (The kill itself, and that
    nothing written is lost or changed: test_resume.py.)"""
    api = MemoryApi(latency=0.05)
    progress = Recorder(clock=loop_time)
    config = job_config(
        tmp_path, manifest(tmp_path, 200), http={"concurrency": 4}, output=tmp_path / f"o.{fmt}"
    )
    samples: list[tuple[float, int]] = []  # (moment, rows on disk)

    async def look_now_and_then() -> None:
        while len(progress.rows) < 200:
            await anyio.sleep(0.07)
            samples.append((loop_time(), len(on_disk(config.output))))

    summary = run(config, api, progress, during=look_now_and_then)

    assert summary.ok == 200
    made = [moment for moment, _ in progress.rows]
    assert len(samples) > 20
    for moment, written in samples:
        assert written >= sum(1 for t in made if t < moment - FLUSH_INTERVAL), moment
    # ... and it looked while rows were buffered (else the bound above would say nothing).
    assert any(written < sum(1 for t in made if t < moment) for moment, written in samples)
