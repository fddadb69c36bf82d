"""Holding up overnight (issue 4): rate limits, outages, hung requests, malformed answers, the key.

Real jobs run against the local server on 127.0.0.1 with its fault knobs and assert outcomes:
every image answered once, error rows and messages, the key nowhere. How fast and when (a
rate never exceeded, a pause ended on time, a watchdog firing after its deadline) is judged
on virtual time in ``test_flow_on_virtual_time.py``, never by the wall clock of a shared
machine. The adaptive rate controller is also driven by a discrete-event simulation on a fake
clock, where minutes of traffic take milliseconds. Every test runs under a hard timeout, so a
hang fails instead of blocking the suite. Bad input is in ``test_robustness_input.py``.
"""

from __future__ import annotations

import heapq
import io
import logging
import math
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

from batchclassify import HttpConfig, JobConfig, RetryConfig, run_job
from batchclassify.commands.progress import ProgressBar
from batchclassify.config import OutageConfig
from batchclassify.error_types import ErrorType
from batchclassify.errors import RetryableError
from batchclassify.job.health import HealthMonitor
from batchclassify.job.ratelimit import RateController
from batchclassify.job.runner import JobSummary
from batchclassify.server import BackgroundServer, Fault, RequestRecord
from batchclassify.summary import Progress

from .conftest import (
    COLORS,
    KEY,
    Cli,
    MakeServer,
    png,
    read_rows,
    rows_by_id,
    unique_png,
)
from .test_flow_control import FakeClock

#: Retries scaled down: quick, and a budget an outage of a second would exhaust many times over.
FAST_RETRY = RetryConfig(retries=2, backoff_base=0.05, backoff_max=0.2)
#: Outage handling scaled down: called after 0.3 s of failures, probes every 0.2-0.4 s.
FAST_OUTAGE = OutageConfig(outage_after=0.3, probe_initial=0.2, probe_max=0.4, max_outage=30)


# -- harness ---------------------------------------------------------------------------------


HARD_TIMEOUT = 60.0


@pytest.fixture(autouse=True)
def hard_timeout() -> Iterator[None]:
    """Fail a test still running after ``HARD_TIMEOUT`` seconds instead of hanging CI (the
    job-running tests also have a tighter ``fail_after``; this catches everything else)."""
    seconds = HARD_TIMEOUT

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError(f"test still running after {seconds:g} s: a hang")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def make_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    colors = list(COLORS)
    paths = []
    for n in range(count):
        path = folder / f"{n:04d}.png"
        path.write_bytes(unique_png(colors[n % len(colors)], str(path)))
        paths.append(path)
    return paths


def job_config(server: BackgroundServer, folder: Path, output: Path, **changes: Any) -> JobConfig:
    http = changes.pop("http", {})
    return JobConfig(
        sources=(str(folder),),
        model="colors/1",
        output=output,
        http=HttpConfig(api_url=server.url, api_key=KEY, **http),
        **changes,
    )


@dataclass
class Recorder(ProgressBar):
    """A real progress bar (drawn into ``screen``) that also keeps what it was told, timed
    by ``clock`` (``virtualtime.loop_time`` for a job on virtual time)."""

    clock: Callable[[], float] = time.monotonic
    screen: io.StringIO = field(default_factory=io.StringIO)
    notes: list[tuple[float, str | None]] = field(default_factory=list)
    rows: list[tuple[float, str]] = field(default_factory=list)
    on_progress: Callable[[Progress], None] | None = None
    _waiting: list[tuple[int, anyio.Event]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(stream=self.screen, enabled=True)

    async def wait_for_rows(self, count: int) -> None:
        if len(self.rows) < count:
            reached = anyio.Event()
            self._waiting.append((count, reached))
            await reached.wait()

    def progress(self, progress: Progress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)
        super().progress(progress)

    def row(self, row: Mapping[str, Any]) -> None:
        self.rows.append((self.clock(), row["status"]))
        for count, reached in self._waiting:
            if len(self.rows) >= count:
                reached.set()
        super().row(row)

    def note(self, text: str | None) -> None:
        self.notes.append((self.clock(), text))
        super().note(text)

    def texts(self) -> list[str]:
        return [text for _, text in self.notes if text is not None]


def run(
    config: JobConfig,
    progress: Recorder | None = None,
    *,
    limit: float = 20.0,
    during: Callable[[], Any] | None = None,
) -> JobSummary:
    """Run the job (and ``during``, an async function, beside it) under ``fail_after(limit)``."""
    result: list[JobSummary] = []

    async def main() -> None:
        with anyio.fail_after(limit):
            async with anyio.create_task_group() as group:
                if during is not None:
                    group.start_soon(during)
                result.append(await run_job(config, progress=progress))

    anyio.run(main)
    return result[0]


def arrivals(server: BackgroundServer) -> list[RequestRecord]:
    return [r for r in server.stats.recent if r.path == "/colors/1"]


def most_in_one_second(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times)))


# -- rate control: a simulated server on a fake clock ---------------------------------------


class SimulatedApi:
    """A server admitting ``limit(t)`` requests in any one-second window, on virtual time.

    Requests start when the controller allows; a 429 comes back at once (as the hosted API
    and the local server answer it before any work), a success after ``latency``. Answers are
    delivered in time order, also while the controller sleeps, so its feedback lags as it does
    in a real job. Workers take the next request as soon as their answer is in.
    """

    def __init__(
        self, *, limit: Callable[[float], float], latency: float, concurrency: int
    ) -> None:
        self.now = 0.0
        self.limit, self.latency, self.concurrency = limit, latency, concurrency
        self.controller = RateController(rate=None, clock=self.clock, sleep=self.sleep)
        self._answers: list[tuple[float, int, bool, float | None, float]] = []
        self._admitted: deque[float] = deque()
        self._sequence = 0
        self.log: list[tuple[float, bool]] = []  # (start, admitted)
        self.strays: list[float] = []  # moments at which one request gets a 429 regardless

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        self._deliver(until)
        self.now = max(self.now, until)

    def _deliver(self, until: float) -> None:
        while self._answers and self._answers[0][0] <= until:
            moment, _, ok, retry_after, started = heapq.heappop(self._answers)
            self.now = max(self.now, moment)
            if ok:
                self.controller.on_success(started)
            else:
                self.controller.on_rate_limited(retry_after, started)

    def _send(self) -> None:
        now = self.now
        while self._admitted and self._admitted[0] <= now - 1.0:
            self._admitted.popleft()
        retry_after: float | None = None
        if self.strays and now >= self.strays[0]:
            self.strays.pop(0)
            ok, retry_after = False, 1.0
        elif len(self._admitted) < self.limit(now):
            self._admitted.append(now)
            ok = True
        else:
            ok, retry_after = False, float(max(1, math.ceil(self._admitted[0] + 1.0 - now)))
        self.log.append((now, ok))
        self._sequence += 1
        answer_at = now + (self.latency if ok else 0.005)
        heapq.heappush(self._answers, (answer_at, self._sequence, ok, retry_after, now))
        self.now += 0.0001  # requests leave one after another, not at one instant

    def run(self, seconds: float) -> None:
        async def main() -> None:
            while self.now < seconds:
                if len(self._answers) >= self.concurrency:
                    self._deliver(self._answers[0][0])
                    continue
                await self.controller.acquire()
                self._send()

        anyio.run(main)

    def figures(self, start: float, end: float) -> tuple[float, float]:
        """Admitted requests per second, and the share answered 429, over [start, end)."""
        part = [ok for moment, ok in self.log if start <= moment < end]
        admitted = sum(part)
        return admitted / (end - start), 1 - admitted / len(part)


@pytest.mark.parametrize(
    ("limit", "latency", "concurrency"),
    [(20, 0.2, 32), (20, 0.05, 4), (40, 0.1, 16), (5, 0.5, 32), (100, 0.2, 64)],
)
def test_adaptive_rate_settles_under_the_limit_with_few_429s(
    limit: float, latency: float, concurrency: int
) -> None:
    """Five minutes of traffic: >= 90 % of the limit used, < 5 % of requests answered 429.

    With answers that take longer than a 429 (any real server), the first limit used to be
    measured from the answers already back when the first 429 arrived (almost none), and the
    job crawled at 1 request per second for good.
    """
    api = SimulatedApi(limit=lambda _t: limit, latency=latency, concurrency=concurrency)
    api.run(300)
    achieved, rejected = api.figures(30, 300)
    assert achieved >= 0.9 * limit, achieved
    assert rejected < 0.05, rejected
    whole, rejected_whole = api.figures(0, 300)
    assert whole >= 0.85 * limit and rejected_whole < 0.05


@pytest.mark.parametrize("refused", [1, 5])
def test_a_stray_429_does_not_set_a_ceiling(refused: int) -> None:
    """A 429 that a full window cannot explain (none of ours got through before it, or some
    sent after it did: another client, a run just stopped, a glitch) says nothing about our
    rate: the job goes on at full speed after the pause."""
    api = SimulatedApi(limit=lambda _t: 10_000, latency=0.05, concurrency=8)
    api.strays = [(refused - 0.5) * 0.0001]  # the first wave's request number ``refused``
    api.run(60)
    achieved, _ = api.figures(5, 60)
    assert achieved >= 0.9 * 8 / 0.05  # what 8 workers at 50 ms manage
    assert api.controller.rate is None


def test_adaptive_rate_follows_a_changing_limit() -> None:
    """The limit halves at t=100 s: settled again 20 s later. It doubles: found within
    a few minutes (probing above a known limit is slow on purpose: it costs 429s)."""
    lowered = SimulatedApi(limit=lambda t: 40 if t < 100 else 20, latency=0.2, concurrency=32)
    lowered.run(200)
    achieved, rejected = lowered.figures(120, 200)
    assert achieved >= 0.9 * 20 and rejected < 0.05, (achieved, rejected)

    raised = SimulatedApi(limit=lambda t: 20 if t < 100 else 40, latency=0.2, concurrency=32)
    raised.run(400)
    achieved, rejected = raised.figures(300, 400)
    assert achieved >= 0.9 * 40 and rejected < 0.05, (achieved, rejected)


def test_ceiling_does_not_grow_while_requests_are_held_back_by_something_else() -> None:
    """After a half-hour outage (no requests at all) the job resumes near the known limit,
    not at a ceiling grown meanwhile that would let a storm of 429s through."""
    api = SimulatedApi(limit=lambda _t: 20, latency=0.1, concurrency=16)
    api.run(60)
    before = api.controller.rate
    assert before is not None and 17 <= before <= 21
    api.now += 1800  # nothing is sent while the API is down

    async def one() -> None:
        await api.controller.acquire()

    anyio.run(one)
    assert api.controller.rate is not None and api.controller.rate <= 1.05 * before


@pytest.mark.parametrize("pause", [0.3, 1.0, 7.5])
def test_a_retry_after_pause_ends_exactly_when_it_said(pause: float) -> None:
    """On a fake clock: after a 429 with Retry-After, no request may start before the pause
    ends, and the first one starts the moment it does."""
    clock = FakeClock()
    refused_at = clock.now
    controller = RateController(rate=None, clock=clock, sleep=clock.sleep)
    controller.on_rate_limited(retry_after=pause, started=refused_at - 0.1)
    starts: list[float] = []

    async def main() -> None:
        await controller.acquire()
        starts.append(clock.now)

    anyio.run(main)
    assert starts == [pytest.approx(refused_at + pause)]


# -- outages --------------------------------------------------------------------------------


@pytest.mark.slow
def test_server_down_mid_job_pauses_probes_and_resumes(
    tmp_path: Path, make_server: MakeServer
) -> None:
    """Connection refused for 1.5 s mid-job (the server stops listening, its port kept):
    no item is failed (each has 3 attempts, an outage of that length would eat them many
    times over), the bar says so, the job carries on. (That nothing is answered while it is
    down, and how it is probed: test_flow_on_virtual_time.py.)"""
    server = make_server(latency=0.1)
    make_images(tmp_path / "in", 60)
    progress = Recorder()
    config = job_config(
        server,
        tmp_path / "in",
        tmp_path / "out.jsonl",
        http={"concurrency": 4},
        retry=FAST_RETRY,
        outage=FAST_OUTAGE,
    )

    async def outage_after_ten_rows() -> None:
        await progress.wait_for_rows(10)
        await anyio.to_thread.run_sync(server.set_down, True)
        await anyio.sleep(1.5)
        await anyio.to_thread.run_sync(server.set_down, False)

    summary = run(config, progress, during=outage_after_ten_rows)

    assert summary.exit_code == 0, summary.errors
    rows = rows_by_id(tmp_path / "out.jsonl")
    assert len(rows) == 60 and all(row["status"] == "ok" for row in rows.values())
    notes = progress.texts()
    assert any(n.startswith("API unavailable, retrying in") for n in notes), notes
    assert any("cannot connect" in n or "closed the connection" in n for n in notes), notes
    assert progress.notes[-1][1] is None  # cleared once the API answered again
    assert "API unavailable, retrying in" in progress.screen.getvalue()
    assert server.stats.statuses[200] >= 60


def test_an_item_gives_up_only_while_the_api_works_for_others() -> None:
    """The rule behind the outage tests, on a fake clock."""
    now = [100.0]
    monitor = HealthMonitor(max_outage=60, outage_after=5, clock=lambda: now[0])
    refused = RetryableError("cannot connect", kind=ErrorType.CONNECTION)
    monitor.success(started=99.0)
    # Alone: only this item fails, the others are answered.
    monitor.failure(refused, "a")
    assert monitor.others_fine_since("a", 100.0)
    # Others fail too, and the only answers since are to requests sent before the failures
    # began (on their way as the API went down): no evidence, keep the item.
    now[0] = 100.2
    monitor.failure(refused, "b")
    monitor.success(started=99.9)
    monitor.failure(refused, "c")
    assert not monitor.others_fine_since("a", 100.0)
    # A request sent after the item first failed was answered: the API works, give up.
    now[0] = 100.5
    monitor.success(started=100.3)
    assert monitor.others_fine_since("a", 100.0)


def test_items_failing_alone_still_use_their_retry_budget(
    tmp_path: Path, make_server: MakeServer
) -> None:
    """Two images the server always answers 500 for, among healthy ones: no outage, each of
    the two gives up after its 3 attempts; the others are classified."""
    server = make_server(latency=0.05)
    folder = tmp_path / "in"
    make_images(folder, 20)
    for name, side in (("0000-bad.png", 9), ("0001-bad.png", 10)):
        data = png("red", side)
        (folder / name).write_bytes(data)
        server.fail_image(data, 500)
    progress = Recorder()
    config = job_config(
        server,
        folder,
        tmp_path / "out.jsonl",
        http={"concurrency": 4},
        retry=RetryConfig(retries=2, backoff_base=0.02, backoff_max=0.05),
        outage=OutageConfig(outage_after=1.0, probe_initial=0.2, probe_max=0.4),
    )

    summary = run(config, progress)

    assert summary.exit_code == 1
    rows = {Path(row["path"]).name: row for row in read_rows(tmp_path / "out.jsonl")}
    for name in ("0000-bad.png", "0001-bad.png"):
        bad = rows.pop(name)
        assert bad["status"] == "error" and bad["error_type"] == "server_error"
        assert bad["attempts"] == 3 and bad["http_status"] == 500
        assert bad["error"] == "HTTP 500: Internal error. (gave up after 3 requests)"
    assert len(rows) == 20 and all(row["status"] == "ok" for row in rows.values())
    assert not any("API unavailable" in n for n in progress.texts())


def test_max_failures_stops_a_job_whose_items_mostly_fail(
    tmp_path: Path, make_server: MakeServer, cli: Cli
) -> None:
    server = make_server()
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(40):
        (folder / f"{n:03d}.jpg").write_bytes(b"not an image %d" % n)
    output = tmp_path / "out.jsonl"

    result = cli(
        "run", folder, "-m", "colors/1", "--api-url", server.url, "-o", output,
        "--max-failures", "5", "--concurrency", "2",
    )  # fmt: skip

    assert result.code == 3
    assert "stopped after 5 failed items (--max-failures)" in result.err
    rows = read_rows(output)
    assert 5 <= len(rows) <= 7 and all(row["error_type"] == "bad_image" for row in rows)
    assert server.stats.requests <= 8  # stopped, not run through the other 33


# -- hung and slow requests -----------------------------------------------------------------


def test_hung_and_dropped_requests_time_out_and_are_retried(
    tmp_path: Path, make_server: MakeServer
) -> None:
    """aiohttp's timeout cuts a hung request, a dropped connection is an error: each such
    request is sent again and every image ends ok. (Exact counts, on virtual time:
    test_flow_on_virtual_time.py; here a loaded machine may time out one more.)"""
    server = make_server()
    server.script("hang", "drop", "hang")
    make_images(tmp_path / "in", 10)
    config = job_config(
        server,
        tmp_path / "in",
        tmp_path / "out.jsonl",
        http={"concurrency": 4, "timeout": 0.5},
        retry=FAST_RETRY,
    )

    summary = run(config, limit=30)  # a 0.5 s timeout, not the server's 3600 s hang

    assert summary.exit_code == 0
    rows = rows_by_id(tmp_path / "out.jsonl")
    assert len(rows) == 10 and {row["status"] for row in rows.values()} == {"ok"}
    assert server.stats.hangs == 2 and server.stats.drops == 1
    retried = [row["attempts"] for row in rows.values() if row["attempts"] > 1]
    assert len(retried) >= 3 and summary.retries == sum(retried) - len(retried)


def test_transient_faults_of_every_kind_end_with_every_image_ok(
    tmp_path: Path, make_server: MakeServer
) -> None:
    """Long-tailed latency, random 500s, dropped and hung connections, all at once."""
    server = make_server(
        latency_distribution="longtail",
        latency_scale=0.04,
        error_rate=0.1,
        drop_rate=0.05,
        hang_rate=0.03,
        seed=4,
    )
    make_images(tmp_path / "in", 100)
    config = job_config(
        server,
        tmp_path / "in",
        tmp_path / "out.jsonl",
        http={"concurrency": 16, "timeout": 0.5},
        retry=RetryConfig(retries=5, backoff_base=0.02, backoff_max=0.2),
        outage=FAST_OUTAGE,
    )

    summary = run(config, limit=30)

    assert summary.exit_code == 0, summary.errors
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(rows) == 100 and all(row["status"] == "ok" for row in rows)
    assert server.stats.statuses[500] > 0 and server.stats.drops > 0 and server.stats.hangs > 0
    assert summary.retries >= server.stats.statuses[500] + server.stats.drops


# -- malformed answers ----------------------------------------------------------------------


def test_malformed_answers_are_errors_for_their_item(
    tmp_path: Path, make_server: MakeServer
) -> None:
    html = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1>nginx</body></html>"
    answers: dict[str, tuple[list[Fault], str, str]] = {
        "a-not-json": ([Fault(body=b"internal error, try again")], "bad_response",
                       "server answered 200 with a non-JSON body: internal error, try again"),
        "b-html-200": ([Fault(body=html)], "bad_response",
                       "server answered 200 with a non-JSON body: an HTML page instead of JSON"),
        "c-html-502": ([Fault(status=502, body=html)] * 3, "server_error",
                       "HTTP 502: an HTML page instead of JSON (a proxy or gateway error?) "
                       "(gave up after 3 requests)"),
        "d-other-json": ([Fault(body=b'{"status": "queued"}')], "bad_response",
                         "server answered 200 without 'predictions'"),
        "e-json-list": ([Fault(body=b"[1, 2, 3]")], "bad_response",
                        "server answered 200 without 'predictions'"),
        "f-odd-predictions": ([Fault(body=b'{"predictions": "red"}')], "bad_response",
                              "'predictions' that is neither a list nor an object"),
        "g-cut-off-json": ([Fault(body=b'{"predictions": [{"class": "re')], "bad_response",
                           "server answered 200 with a non-JSON body"),
        "h-empty": ([Fault(body=b"")], "bad_response",
                    "server answered 200 with a non-JSON body: empty body"),
    }  # fmt: skip
    folder = tmp_path / "in"
    folder.mkdir()
    server = make_server()
    for name in answers:  # one worker: the manifest's order is the request order
        (folder / f"{name}.png").write_bytes(png("blue"))
        server.script(*answers[name][0])
    (folder / "z-fine.png").write_bytes(png("blue"))
    manifest = folder / "list.txt"
    manifest.write_text("".join(f"{name}.png\n" for name in [*answers, "z-fine"]))
    config = job_config(
        server, manifest, tmp_path / "out.jsonl", http={"concurrency": 1}, retry=FAST_RETRY
    )

    summary = run(config)

    assert summary.exit_code == 1 and summary.fatal is None
    rows = {Path(row["path"]).stem: row for row in read_rows(tmp_path / "out.jsonl")}
    assert rows.pop("z-fine")["top"] == "blue"
    for name, (_, kind, message) in answers.items():
        row = rows[name]
        assert row["status"] == "error" and row["error_type"] == kind, row
        assert message in row["error"], row["error"]
        assert row["http_status"] == (502 if kind == "server_error" else 200)


# -- the API key ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("key_in", ["query", "header"])
def test_api_key_never_appears_in_any_output(
    tmp_path: Path,
    make_server: MakeServer,
    cli: Cli,
    caplog: pytest.LogCaptureFixture,
    key_in: Literal["query", "header"],
) -> None:
    """Every error path of a job, with answers that echo the key back; then grep everything
    the runs wrote (rows, settings file, stdout, stderr with --verbose, logs) for the key."""
    caplog.set_level(logging.DEBUG)
    server = make_server(history_size=1000)
    folder = tmp_path / "in"
    make_images(folder, 6)
    # In a subfolder, walked after the folder's files: the scripted answers below go to the
    # six images, the server itself refuses this one (a folder's files come unsorted).
    (folder / "zz").mkdir()
    (folder / "zz" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    (folder / "zz-empty.png").write_bytes(b"")
    (folder / "zz-dangling.png").symlink_to(tmp_path / "nowhere.png")
    manifest = tmp_path / "list.csv"
    manifest.write_text(f'path,note\n{folder}/0000.png,x\nmissing.png,y\n,z\n"bad,row\n')
    echo = f"/colors/1?api_key={KEY}&confidence=0.4 Bearer {KEY}"
    server.script(
        Fault(status=500, body=f"<html><body>upstream {echo}</body></html>".encode()),
        Fault(status=429, headers={"Retry-After": "0"}, message=f"slow down {echo}"),
        "drop",
        "hang",
        Fault(status=503, message=f"model loading for {echo}"),
        Fault(body=f"proxy said: {echo}".encode()),
        Fault(status=422, message=f"cannot process {echo}"),
        Fault(status=200, body=f'{{"predictions": 1, "echo": "{echo}"}}'.encode()),
    )
    output = tmp_path / "out.jsonl"
    common = ["-m", "colors/1", "--api-url", server.url, "--api-key-in", key_in, "--verbose"]

    items = cli(
        "run", folder, manifest, *common, "-o", output, "--timeout", "0.5",
        "--concurrency", "1", "--retries", "2",
    )  # fmt: skip
    server.script(Fault(status=403, message=f"key {KEY} is not allowed here"))
    make_images(tmp_path / "more", 2)
    fatal = cli("run", tmp_path / "more", *common, "-o", tmp_path / "fatal.jsonl")
    usage = cli("run", folder, *common[:2], "--api-url", f"ftp://{KEY}@host", "-o", output, "-v")
    other_job = cli("run", folder, "-m", "colors/2", "--api-url", server.url, "-o", output, "-v")
    server.set_down(True)
    outage = run(
        JobConfig(
            sources=(str(folder),),
            model="colors/1",
            output=tmp_path / "outage.jsonl",
            http=HttpConfig(api_url=server.url, api_key=KEY, api_key_in=key_in),
            retry=FAST_RETRY,
            outage=OutageConfig(outage_after=0.1, probe_initial=0.1, probe_max=0.1, max_outage=0.3),
        )
    )

    assert items.code == 1, items.err
    assert fatal.code == 3 and "api key was refused" in fatal.err.lower()
    assert usage.code == 2 and "Traceback" in usage.err  # --verbose printed one
    assert other_job.code == 2 and "Traceback" in other_job.err
    assert outage.exit_code == 3
    rows = read_rows(output)
    kinds = {row["error_type"] for row in rows}
    assert kinds >= {"bad_image", "empty_file", "missing_file", "bad_manifest_row",
                     "bad_response", "http_error"}, kinds  # fmt: skip
    assert {r.api_key_in for r in arrivals(server)} == {key_in}
    written = [
        *(path.read_bytes().decode("utf-8", "replace") for path in tmp_path.glob("*.json*")),
        *(result.out + result.err for result in (items, fatal, usage, other_job)),
        caplog.text,
        str(outage.fatal),
        repr(outage),
    ]
    assert len(written) >= 11
    for text in written:
        assert KEY not in text
    assert "***" in output.read_text()  # the echoes were there, redacted
